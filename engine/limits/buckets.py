"""Token buckets: the arithmetic every store shares, and the store in this process's memory.

A bucket holds up to `capacity` tokens and refills at `rate` tokens a second. A `Take` asks one
bucket for `cost` tokens and passes only while the bucket holds at least `need`:

- a request limit takes 1 and needs 1;
- a tokens-per-minute limit needs 1 at admission but takes nothing; the call's real usage is
  taken afterwards with `need` = `CHARGE` (never refuses), so the bucket may go into debt and
  refuses new calls until the debt is paid back;
- a daily budget is a bucket that never refills (`rate` 0) under a key that names the UTC day;
  `reset_in` says when the next day's key starts full.

`settle` decides a list of takes all or nothing: when one refuses, no bucket changes, and the wait
is the longest of the refusing buckets' (a client must wait for every one of them). The stores
(`MemoryBuckets` here, `ratelimit_sqlite.SqliteBuckets` for the workers of one node,
`ratelimit_redis.RedisRateLimiter` for every node) run `settle` atomically over their state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

_PRUNE_AT = 50_000
CHARGE = -1e18  # the `need` of a take that must always pass (a charge after the call)


@dataclass(frozen=True, slots=True)
class Take:
    limit: str  # which limit this bucket enforces, for the refusal and its metric
    key: str
    rate: float  # tokens a second; 0: never refills (the key rolls over instead)
    capacity: float
    cost: float = 1.0
    need: float = 1.0
    reset_in: float = 0.0  # rate 0: seconds until the key rolls over (the wait when it refuses)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    wait: float = 0.0  # seconds until every refusing bucket would pass
    limit: str | None = None  # the refusing limit with the longest wait


ALLOWED = Verdict(True)
State = tuple[float, float]  # (level, at)


class Buckets(Protocol):
    """What every store offers: settle takes atomically; release the store at the end."""

    async def apply(self, takes: Sequence[Take]) -> Verdict: ...

    async def aclose(self) -> None: ...


def settle(takes: Sequence[Take], states: Sequence[State | None], now: float) -> tuple[Verdict, list[State | None]]:
    """The verdict on `takes` given each bucket's stored state (None: never used, or expired),
    and the states to store (None: leave that bucket as it is). Refused: nothing to store."""
    levels = []
    refused: Take | None = None
    longest = -1.0
    for take, state in zip(takes, states, strict=True):
        level, at = state if state is not None else (take.capacity, now)
        level = min(take.capacity, level + max(0.0, now - at) * take.rate)
        levels.append(level)
        if level < take.need:
            wait = (take.need - level) / take.rate if take.rate > 0 else take.reset_in
            if wait > longest:
                refused, longest = take, wait
    if refused is not None:
        return Verdict(False, longest, refused.limit), []
    return ALLOWED, [(level - take.cost, now) if take.cost else None for take, level in zip(takes, levels, strict=True)]


def expires(take: Take, state: State) -> float:
    """When the bucket no longer needs storing: once full again (an absent bucket is full)."""
    level, at = state
    if take.rate > 0:
        return at + max(0.0, take.capacity - level) / take.rate
    return at + take.reset_in


class Batches:
    """Decisions for a store that must wait on I/O: those that arrive while a batch is being
    settled wait, then go together, in arrival order, in the next one (one transaction or one
    round trip per batch instead of one per request). `settle_batch` gives one verdict per
    decision; if it raises, every caller of that batch gets the exception."""

    def __init__(self, settle_batch: Callable[[list[Sequence[Take]]], Awaitable[list[Verdict]]]) -> None:
        self.settle_batch = settle_batch
        self._pending: list[tuple[Sequence[Take], asyncio.Future[Verdict]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def apply(self, takes: Sequence[Take]) -> Verdict:
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending.append((takes, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def wait_idle(self) -> None:
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    verdicts = await self.settle_batch([takes for takes, _ in batch])
                except Exception as exc:  # noqa: BLE001 - a failure must reach the callers, never leave them waiting
                    outcomes: list[tuple[Verdict | None, BaseException | None]] = [(None, exc)] * len(batch)
                else:
                    outcomes = [(verdict, None) for verdict in verdicts]
                for (_, future), (verdict, error) in zip(batch, outcomes, strict=True):
                    if future.done():  # its request was cancelled meanwhile
                        continue
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(verdict)  # type: ignore[arg-type]
        finally:
            self._drainer = None


class MemoryBuckets:
    """Buckets in this process: exact for one worker, and the fastest (no I/O, no thread hop).
    With several workers each would hold its own buckets, so storage.py picks it only for one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (level, at, expires)

    def decide(self, takes: Sequence[Take]) -> Verdict:
        now = self.clock()
        states = [self._state(take.key, now) for take in takes]
        verdict, new = settle(takes, states, now)
        for take, state in zip(takes, new, strict=False):  # empty when refused
            if state is not None:
                self._buckets[take.key] = (*state, expires(take, state))
        if len(self._buckets) > _PRUNE_AT:
            self._prune(now)
        return verdict

    async def apply(self, takes: Sequence[Take]) -> Verdict:
        """`decide` behind the interface every store shares (the others must await)."""
        return self.decide(takes)

    async def aclose(self) -> None:
        """Nothing to release: the buckets live in this process."""

    def _state(self, key: str, now: float) -> State | None:
        found = self._buckets.get(key)
        return None if found is None or found[2] <= now else (found[0], found[1])

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, _, until) in self._buckets.items() if until <= now]:
            del self._buckets[key]


class RateLimiter(MemoryBuckets):
    """One request bucket per key with fixed limits: the simplest use of the buckets."""

    def __init__(self, requests_per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.rate = requests_per_minute / 60.0
        self.burst = float(max(burst, 1))

    def allow(self, key: str) -> tuple[bool, float]:
        """Take one token for `key`. Returns (allowed, seconds until a token is available)."""
        verdict = self.decide([Take("rate_limit", key, self.rate, self.burst)])
        return verdict.allowed, verdict.wait
