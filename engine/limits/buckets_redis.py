"""Token buckets in Redis, shared by every worker of every engine node.

The buckets of `limits/buckets.py`, each one Redis hash (`tokens`, `at`) under `prefix + key`, and one
Lua script that settles a request's takes all or nothing, so a decision is atomic across nodes.
The script reads Redis's own clock: nodes whose clocks disagree still share one bucket. A bucket
expires once it would have refilled completely (a day's budget: once its day is over).

When Redis is unreachable the limiter FAILS OPEN to this node's own buckets (`fallback`: the
SQLite file its workers share, or this worker's memory), with the same limits. Why: the limits
guard the model budget against a noisy user; they are not what makes an answer correct, so a
cache outage must not become a full outage of every node. Falling back to local buckets (instead
of allowing everything) keeps a bound: at worst each node admits the configured rate, until Redis
is back. Each outage logs one WARNING when it starts and one INFO, with the number of decisions
taken locally, when Redis answers again (its refusals still count in
`assistant_limit_refusals_total`). While Redis is down only one request per `_RETRY_SECONDS` tries
it, so a dead Redis adds no latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .. import logs
from .buckets import ALLOWED, Batches, Buckets, Take, Verdict

_TIMEOUT_SECONDS = 0.25
_RETRY_SECONDS = 1.0
# KEYS: the buckets; ARGV: five per bucket (rate, capacity, cost, need, reset_in), as in `Take`.
# Returns {index of the refusing bucket with the longest wait (1-based; 0: allowed), that wait as
# a string} (Lua numbers become integers in a Redis reply). Same arithmetic as ratelimit.settle.
_SETTLE = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local levels, refused, longest = {}, 0, -1
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 5
  local rate, capacity = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local need, reset_in = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local level = tonumber(bucket[1]) or capacity
  local at = tonumber(bucket[2]) or now
  level = math.min(capacity, level + math.max(0, now - at) * rate)
  levels[i] = level
  if level < need then
    local wait = reset_in
    if rate > 0 then wait = (need - level) / rate end
    if wait > longest then refused, longest = i, wait end
  end
end
if refused > 0 then return {refused, tostring(longest)} end
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 5
  local rate, capacity, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if cost ~= 0 then
    local level = levels[i] - cost
    redis.call('HSET', key, 'tokens', tostring(level), 'at', tostring(now))
    local ttl = tonumber(ARGV[b + 5])
    if rate > 0 then ttl = (capacity - level) / rate end
    redis.call('EXPIRE', key, math.ceil(ttl) + 1)
  end
end
return {0, '0'}
"""


class RedisRateLimiter:
    """The store interface (`apply`, `aclose`) over Redis. `url` is the secret's value (it may
    hold a password: never log it); `prefix` keeps assistants that share one Redis apart."""

    def __init__(self, url: str, prefix: str, fallback: Buckets, client: redis.Redis | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.fallback = fallback
        self.client = client or redis.Redis.from_url(
            url,
            socket_timeout=_TIMEOUT_SECONDS,
            socket_connect_timeout=_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),  # one try: the fallback is the retry
        )
        self.script = self.client.register_script(_SETTLE)
        self._batches = Batches(self._settle_batch)
        self._retry_at = 0.0
        self._outage = False
        self._local_decisions = 0

    async def apply(self, takes: Sequence[Take]) -> Verdict:
        """Settle `takes` in Redis (or, while it is down, in the fallback)."""
        return await self._batches.apply(takes)

    async def _settle_batch(self, batch: list[Sequence[Take]]) -> list[Verdict]:
        """One round trip for the whole batch: a pipeline of script calls, each atomic."""
        now = time.monotonic()
        if now >= self._retry_at:
            if self._outage:
                self._retry_at = now + _RETRY_SECONDS  # one probe at a time while Redis is down
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for takes in batch:
                        args: list[float] = []
                        for t in takes:
                            args += (t.rate, t.capacity, t.cost, t.need, t.reset_in)
                        await self.script(keys=[self.prefix + t.key for t in takes], args=args, client=pipe)
                    replies = await pipe.execute()
            except (RedisError, OSError, TimeoutError) as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return [_verdict(takes, reply) for takes, reply in zip(batch, replies, strict=True)]
        self._local_decisions += len(batch)
        return [await self.fallback.apply(takes) for takes in batch]

    async def aclose(self) -> None:
        await self._batches.wait_idle()
        await self.client.aclose()
        await self.fallback.aclose()

    def _went_down(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + _RETRY_SECONDS
        if not self._outage:
            self._outage = True
            logs.event(
                logs.APP,
                logging.WARNING,
                f"rate limit: Redis unreachable ({type(exc).__name__}: {exc}); failing open to this "
                "node's own limits until it answers again",
            )

    def _came_back(self) -> None:
        self._retry_at = 0.0
        if self._outage:
            self._outage = False
            logs.event(
                logs.APP,
                logging.INFO,
                f"rate limit: Redis answers again after {self._local_decisions} local decisions; limits are "
                "shared again",
            )
            self._local_decisions = 0


def _verdict(takes: Sequence[Take], reply: list) -> Verdict:
    index = int(reply[0])
    return ALLOWED if index == 0 else Verdict(False, float(reply[1]), takes[index - 1].limit)
