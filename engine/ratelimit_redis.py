"""Token buckets in Redis, shared by every worker of every engine node.

The same buckets as `ratelimit.RateLimiter` (`burst` tokens per key, refilled at
requests_per_minute / 60 per second), kept in one Redis hash per key and updated by one Lua script,
so a take is atomic across nodes. The script reads Redis's own clock: nodes whose clocks disagree
still share one bucket. A bucket expires once it would have refilled completely.

When Redis is unreachable the limiter FAILS OPEN to this worker's in-memory buckets, with the same
limits. Why: the rate limit guards the model budget against a noisy user; it is not what makes an
answer correct, so a cache outage must not become a full outage of every node. Falling back to the
local buckets (instead of allowing everything) keeps a bound: at worst each worker of each node
admits the configured rate, until Redis is back. Each outage logs one WARNING when it starts and
one INFO, with the number of decisions taken locally, when Redis answers again. (No metric of its
own: the engine's metric names are a fixed contract, docs/architecture.md.)
While Redis is down only one request per `_RETRY_SECONDS` tries it, so a dead Redis adds no latency.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import logs
from .ratelimit import RateLimiter

_TIMEOUT_SECONDS = 0.25
_RETRY_SECONDS = 1.0
# KEYS[1] bucket; ARGV rate (tokens/s), burst. Returns {allowed 0|1, seconds to wait as a string}
# (Lua numbers become integers in a Redis reply).
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
elseif rate > 0 then
  wait = (1 - tokens) / rate
else
  wait = 60
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
local ttl = 60
if rate > 0 then ttl = math.ceil(burst / rate) + 1 end
redis.call('EXPIRE', KEYS[1], ttl)
return {allowed, tostring(wait)}
"""


class RedisRateLimiter:
    """`RateLimiter`'s interface (`check`, `reconfigured`, `aclose`) over Redis. `url` is the
    secret's value (it may hold a password: never log it); `prefix` keeps assistants that share
    one Redis apart."""

    def __init__(
        self, url: str, requests_per_minute: int, burst: int, prefix: str, client: redis.Redis | None = None
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.rate = requests_per_minute / 60.0
        self.burst = max(burst, 1)
        self.client = client or redis.Redis.from_url(
            url,
            socket_timeout=_TIMEOUT_SECONDS,
            socket_connect_timeout=_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),  # one try: the fallback is the retry
        )
        self.script = self.client.register_script(_TAKE)
        self.fallback = RateLimiter(requests_per_minute, burst)
        self._retry_at = 0.0
        self._outage = False
        self._local_decisions = 0

    async def check(self, key: str) -> tuple[bool, float]:
        """Take one token for `key`. Returns (allowed, seconds until a token is available)."""
        now = time.monotonic()
        if now >= self._retry_at:
            if self._outage:
                self._retry_at = now + _RETRY_SECONDS  # one probe at a time while Redis is down
            try:
                allowed, wait = await self.script(keys=[self.prefix + key], args=[self.rate, self.burst])
            except (RedisError, OSError, TimeoutError) as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return bool(int(allowed)), float(wait)
        self._local_decisions += 1
        return self.fallback.allow(key)

    def reconfigured(self, requests_per_minute: int, burst: int) -> RedisRateLimiter:
        """New limits over the same Redis connection pool (a settings reload)."""
        return RedisRateLimiter(self.url, requests_per_minute, burst, self.prefix, self.client)

    async def aclose(self) -> None:
        await self.client.aclose()

    def _went_down(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + _RETRY_SECONDS
        if not self._outage:
            self._outage = True
            logs.event(
                logs.APP,
                logging.WARNING,
                f"rate limit: Redis unreachable ({type(exc).__name__}: {exc}); failing open to this "
                "worker's in-memory limits until it answers again",
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
