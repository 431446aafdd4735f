"""Token buckets per user or client IP, in memory (per worker process).

Each key gets `burst` tokens, refilled at requests_per_minute / 60 per second. Buckets that have
refilled completely carry no information and are dropped when the table grows, so memory stays
bounded by the number of recently active keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_PRUNE_AT = 50_000


class RateLimiter:
    def __init__(self, requests_per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = requests_per_minute / 60.0
        self.burst = float(max(burst, 1))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: str) -> tuple[bool, float]:
        """Take one token for `key`. Returns (allowed, seconds until a token is available)."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > _PRUNE_AT:
                self._prune(now)
            return True, 0.0
        self._buckets[key] = (tokens, now)
        wait = (1 - tokens) / self.rate if self.rate > 0 else 60.0
        return False, wait

    async def check(self, key: str) -> tuple[bool, float]:
        """`allow` behind the interface every limiter shares (the Redis one must await)."""
        return self.allow(key)

    def reconfigured(self, requests_per_minute: int, burst: int) -> RateLimiter:
        """A limiter with new limits (fresh buckets), for a settings reload."""
        return RateLimiter(requests_per_minute, burst, self.clock)

    async def aclose(self) -> None:
        """Nothing to release: the buckets live in this process."""

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
