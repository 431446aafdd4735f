"""API keys: made by `assistantctl keys create`, stored hashed, checked in memory on every request.

A key reads `sk-ast-<id>-<secret>`: the id (12 hex digits) finds the record, the secret (32 random
bytes, url-safe base64) proves it. Only SHA-256 of the whole key is stored. The secret has 256 bits
of entropy, so a fast hash is enough: nothing can be guessed from it, and nothing can recover the key.

Keys live beside the history: `<data_dir>/keys.sqlite3` on one node, the `api_keys` table of the
history database with PostgreSQL (shared by every node). Each worker keeps every key in memory and
reads the table again every `REFRESH_SECONDS`, so a key made or revoked anywhere takes effect on
every worker of every node within that time, and a request never waits on the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from .. import logs

SCOPES = ("chat", "history", "admin")
REFRESH_SECONDS = 0.5
PREFIX = "sk-ast-"
_KEY = re.compile(r"^sk-ast-([0-9a-f]{12})-([A-Za-z0-9_-]{43})$")

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, user_name TEXT NOT NULL, scopes TEXT NOT NULL, digest TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, expires_at REAL, revoked_at REAL
);
"""
_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, user_name TEXT NOT NULL, scopes TEXT NOT NULL, digest TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '', created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION
);
"""
_COLUMNS = "id, user_name, scopes, digest, name, created_at, expires_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user: str
    scopes: tuple[str, ...]
    digest: str
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, object]:
        """What `keys list` shows: everything but the digest."""
        data = asdict(self)
        del data["digest"]
        data["scopes"] = list(self.scopes)
        return data


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _row(values: tuple | list) -> ApiKey:
    id_, user, scopes, digest, name, created, expires, revoked = values
    return ApiKey(id_, user, tuple(s for s in scopes.split(",") if s), digest, name, created, expires, revoked)


class _Table(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def rows(self) -> list[ApiKey]: ...
    async def insert(self, key: ApiKey) -> None: ...
    async def revoke(self, key_id: str, at: float) -> bool: ...


class SqliteTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = None

    async def open(self) -> None:
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "busy_timeout=5000", "secure_delete=ON"):
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.executescript(_SQLITE_SCHEMA)
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def rows(self) -> list[ApiKey]:
        async with self.db.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at") as cursor:
            return [_row(r) for r in await cursor.fetchall()]

    async def insert(self, key: ApiKey) -> None:
        await self.db.execute(f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _values(key))

    async def revoke(self, key_id: str, at: float) -> bool:
        cursor = await self.db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id)
        )
        return cursor.rowcount == 1


class PostgresTable:
    """`dsn` is the secret's value (it may hold a password: never log it)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = None

    async def open(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn, command_timeout=5)
        async with self.conn.transaction():
            # The history's own schema lock: nodes starting together must not race on CREATE TABLE.
            await self.conn.execute("SELECT pg_advisory_xact_lock($1)", 0x61737369)
            await self.conn.execute(_POSTGRES_SCHEMA)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def rows(self) -> list[ApiKey]:
        return [_row(tuple(r)) for r in await self.conn.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")]

    async def insert(self, key: ApiKey) -> None:
        await self.conn.execute(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", *_values(key)
        )

    async def revoke(self, key_id: str, at: float) -> bool:
        status = await self.conn.execute(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", at, key_id
        )
        return status.endswith(" 1")


def _values(key: ApiKey) -> tuple:
    return (key.id, key.user, ",".join(key.scopes), key.digest, key.name, key.created_at, key.expires_at, None)


class KeyStore:
    """Every key, kept in memory and refreshed in the background (`start`); `verify` never awaits."""

    def __init__(self, table: _Table) -> None:
        self.table = table
        self._keys: dict[str, ApiKey] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        await self.table.open()
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.table.close()

    async def refresh(self) -> None:
        self._keys = {key.id: key for key in await self.table.rows()}

    def verify(self, presented: str) -> ApiKey | None:
        """The usable key `presented` is, or None (unknown, wrong secret, revoked or expired)."""
        match = _KEY.match(presented)
        if not match:
            return None
        key = self._keys.get(match.group(1))
        if key is None or not hmac.compare_digest(key.digest, _digest(presented)):
            return None
        return key if key.usable(time.time()) else None

    async def create(
        self, user: str, scopes: tuple[str, ...], name: str = "", expires_at: float | None = None
    ) -> tuple[str, ApiKey]:
        """A new key: (the key itself, shown once and never stored; its record)."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
        key_id = secrets.token_hex(6)
        presented = f"{PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        scopes = tuple(sorted(set(scopes)))
        record = ApiKey(key_id, user, scopes, _digest(presented), name, time.time(), expires_at, None)
        await self.table.insert(record)
        return presented, record

    async def revoke(self, key_id: str) -> bool:
        return await self.table.revoke(key_id, time.time())

    async def list(self) -> list[ApiKey]:
        return await self.table.rows()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the last known keys, say so once
                if not self._failing:
                    logs.event(logs.APP, logging.WARNING, f"api keys: refresh failed, keeping the last read: {exc}")
                self._failing = True
            else:
                self._failing = False
