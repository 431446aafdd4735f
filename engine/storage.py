"""Where a worker keeps its state: the one place that picks the backends from the settings.

- history: SQLite in `data_dir` (one node; the default) or PostgreSQL (several nodes), named by
  `history_backend`; the DSN is the secret `history_dsn_secret`.
- rate-limit buckets: this process's memory (the default) or Redis (shared by all workers and
  nodes), named by `rate_limit_backend`; the URL is the secret `rate_limit_redis_url_secret`.

The drivers of the shared backends are imported only when the settings ask for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .crypto import Sealer
from .history import History
from .pii import Masker
from .ratelimit import RateLimiter
from .settings import EngineSettings

if TYPE_CHECKING:
    from .history_postgres import PostgresHistory
    from .ratelimit_redis import RedisRateLimiter

    HistoryStore = History | PostgresHistory
    Limiter = RateLimiter | RedisRateLimiter


def history(settings: EngineSettings, secrets: dict[str, str], sealer: Sealer, masker: Masker) -> HistoryStore:
    """The history store the settings name (not opened yet: the caller awaits `open()` at start)."""
    if settings.history_backend == "postgres":
        from .history_postgres import PostgresHistory

        return PostgresHistory(_secret(secrets, settings.history_dsn_secret, "history_dsn_secret"), sealer, masker)
    return History(settings.data_dir, sealer, masker)


def limiter(settings: EngineSettings, secrets: dict[str, str]) -> Limiter:
    """The rate limiter the settings name; later limit changes go through its `reconfigured`."""
    limit = settings.rate_limit
    if settings.rate_limit_backend == "redis":
        from .ratelimit_redis import RedisRateLimiter

        url = _secret(secrets, settings.rate_limit_redis_url_secret, "rate_limit_redis_url_secret")
        return RedisRateLimiter(url, limit.requests_per_minute, limit.burst, f"assistant:{settings.name}:ratelimit:")
    return RateLimiter(limit.requests_per_minute, limit.burst)


def _secret(secrets: dict[str, str], name: str | None, field: str) -> str:
    value = secrets.get(name) if name else None
    if not value:
        raise RuntimeError(f"{field} names secret {name!r}, which is not in the secrets file")
    return value
