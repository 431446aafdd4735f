"""Where a worker keeps its state: the one place that picks the backends from the settings.

- history: SQLite in `data_dir` (one node; the default) or PostgreSQL (several nodes), named by
  `history_backend`; the DSN is the secret `history_dsn_secret`.
- approval questions of machine tools (engine/tools/approval.py): beside the history, in the
  PostgreSQL database when there is one, else in `<data_dir>/approvals.sqlite3`.
- limit buckets (engine/limits/policy.py): with `rate_limit_backend` "memory", this node's own: this
  process's memory when it is the only worker and keeps no daily budget (nothing to share or to
  keep over a restart), else `<data_dir>/limits.sqlite3`, shared by the node's workers; with
  "redis", Redis (every worker of every node), the URL in the secret `rate_limit_redis_url_secret`,
  falling back to the node's own buckets while Redis is down.

The drivers of the shared backends are imported only when the settings ask for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .history.sqlite import History
from .limits.buckets import Buckets, MemoryBuckets
from .security.crypto import Keyring
from .security.keys import KeyStore, PostgresTable, SqliteTable
from .security.pii import Masker
from .settings import EngineSettings

if TYPE_CHECKING:
    from .history.postgres import PostgresHistory

    HistoryStore = History | PostgresHistory


def history(settings: EngineSettings, secrets: dict[str, str], sealer: Keyring, masker: Masker) -> HistoryStore:
    """The history store the settings name (not opened yet: the caller awaits `open()` at start)."""
    if settings.history_backend == "postgres":
        from .history.postgres import PostgresHistory

        return PostgresHistory(_secret(secrets, settings.history_dsn_secret, "history_dsn_secret"), sealer, masker)
    return History(settings.data_dir, sealer, masker)


def approvals(settings: EngineSettings, history: HistoryStore) -> None:
    """Put machine-tool approval questions beside an open PostgreSQL history, so that an answer on
    any node finds them; otherwise they stay in the node's `<data_dir>/approvals.sqlite3`."""
    if settings.history_backend == "postgres":
        from .history.postgres import PostgresHistory
        from .tools.approval import use_store
        from .tools.approval_postgres import PostgresApprovalStore

        assert isinstance(history, PostgresHistory)
        use_store(Path(settings.data_dir), PostgresApprovalStore(history))


def limiter(settings: EngineSettings, secrets: dict[str, str]) -> Buckets:
    """The bucket store the settings name. The limits themselves are read from the settings on
    every request, so a reload needs no new store."""
    local: Buckets
    if settings.workers == 1 and settings.daily_tokens_per_user is None:
        local = MemoryBuckets()
    else:
        from .limits.buckets_sqlite import SqliteBuckets

        local = SqliteBuckets(Path(settings.data_dir) / "limits.sqlite3")
    if settings.rate_limit_backend == "redis":
        from .limits.buckets_redis import RedisRateLimiter

        url = _secret(secrets, settings.rate_limit_redis_url_secret, "rate_limit_redis_url_secret")
        return RedisRateLimiter(url, f"assistant:{settings.name}:ratelimit:", local)
    return local


def keys(settings: EngineSettings, secrets: dict[str, str]) -> KeyStore:
    """The API keys, beside the history: a file of their own in data_dir, or the PostgreSQL database."""
    if settings.history_backend == "postgres":
        return KeyStore(PostgresTable(_secret(secrets, settings.history_dsn_secret, "history_dsn_secret")))
    return KeyStore(SqliteTable(Path(settings.data_dir) / "keys.sqlite3"))


def _secret(secrets: dict[str, str], name: str | None, field: str) -> str:
    value = secrets.get(name) if name else None
    if not value:
        raise RuntimeError(f"{field} names secret {name!r}, which is not in the secrets file")
    return value
