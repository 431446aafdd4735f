"""Conversation history in PostgreSQL through one asyncpg pool per worker, for several engine nodes.

The same interface and semantics as `history.History` (SQLite): stored text is PII-masked, then
sealed; writes are group-committed (concurrent requests' rows go into one transaction and each
request waits until its own batch is committed, which with PostgreSQL's default
synchronous_commit=on means flushed to the server's WAL); `client_messages` holds the websocket
channel's idempotent-resend claims, visible to every node as soon as they are made. `tool_approvals`
holds the open approval questions of machine tools (engine/tools/approval_postgres.py). The schema is
created at start, idempotently, under an advisory lock so that nodes starting together do not race.
Each message row carries the id of the key that sealed it; deleting, listing and the background
upkeep live in history/lifecycle_postgres.py.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from ..security.crypto import Keyring
from ..security.pii import Masker
from .group_commit import GroupCommit
from .lifecycle_postgres import UPGRADE, PostgresLifecycle
from .sqlite import ClientMessage, OwnedConversations, Row

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    user_name TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    model TEXT,
    tokens INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_user ON messages(user_name, seq);
CREATE TABLE IF NOT EXISTS client_messages (
    seq BIGSERIAL PRIMARY KEY,
    user_name TEXT NOT NULL,
    client_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL,
    UNIQUE (user_name, client_id)
);
CREATE TABLE IF NOT EXISTS tool_approvals (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    chat TEXT NOT NULL,
    tool TEXT NOT NULL,
    asked_at DOUBLE PRECISION NOT NULL,
    answer BOOLEAN,
    expires_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS tool_approvals_by_chat ON tool_approvals(user_name, chat, asked_at);
"""
    + UPGRADE
)
# Any constant shared by every node: CREATE TABLE IF NOT EXISTS is not safe against a concurrent twin.
_SCHEMA_LOCK = 0x61737369  # "assi"
_POOL_MIN, _POOL_MAX = 1, 10
_COMMAND_TIMEOUT = 10.0
# Claim times (client_messages.claimed_at) and approval expiries are the database's clock: whether
# a claim is silent or a question open is never a comparison between two nodes' clocks.
DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
_PING_TIMEOUT = 2.0


class PostgresHistory(OwnedConversations):
    """`History` over PostgreSQL. `dsn` is the secret's value (it may hold a password: never log it)."""

    def __init__(self, dsn: str, sealer: Keyring, masker: Masker) -> None:
        self.dsn = dsn
        self.sealer = sealer
        self.masker = masker
        self._pool: asyncpg.Pool | None = None
        self._group = GroupCommit[list[Row]](self._write)
        self.client_messages = PostgresClientMessages(self)
        self.lifecycle = PostgresLifecycle(self)

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=_POOL_MIN, max_size=_POOL_MAX, command_timeout=_COMMAND_TIMEOUT
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute(_SCHEMA)
        self._group.start()

    async def close(self) -> None:
        await self._group.stop()
        if self._pool:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            return await self.pool.fetchval("SELECT 1", timeout=_PING_TIMEOUT) == 1
        except Exception:  # noqa: BLE001 - readiness reports any storage failure as "not ready"
            return False

    async def owner(self, conversation_id: str) -> str | None:
        return await self.pool.fetchval("SELECT user_name FROM conversations WHERE id = $1", conversation_id)

    async def _last_messages(self, conversation_id: str, limit: int) -> list[dict[str, str]]:
        query = "SELECT role, content, key_id FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"
        rows = await self.pool.fetch(query, conversation_id, limit)
        return [{"role": r["role"], "content": self.sealer.open(r["content"], r["key_id"])} for r in reversed(rows)]

    async def append(self, rows: list[Row]) -> None:
        """Store rows (one conversation each call); returns once they are committed."""
        await self._group.submit(rows)

    async def _write(self, batch: list[list[Row]]) -> None:
        now = time.time()
        conversations: dict[str, tuple[str, str, float, float]] = {}
        messages = []
        for rows in batch:
            for row in rows:
                conversations[row.conversation_id] = (row.conversation_id, row.user, now, now)
                content, key_id = self.sealer.seal(self.masker.mask(row.content))
                messages.append(
                    (row.id, row.conversation_id, row.user, row.role, content, row.model, row.tokens, now, key_id)
                )
        async with self.pool.acquire() as conn, conn.transaction():
            # In id order: two nodes upserting overlapping conversations then lock rows in one order.
            await conn.executemany(
                "INSERT INTO conversations (id, user_name, created_at, updated_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
                [conversations[key] for key in sorted(conversations)],
            )
            await conn.executemany(
                "INSERT INTO messages (id, conversation_id, user_name, role, content, model, tokens, created_at, "
                "key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                messages,
            )

    async def page(
        self, user: str, conversation_id: str | None, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Messages newest first; `before` is a message id cursor. Returns (items, next cursor)."""
        where, args = ["user_name = $1"], [user]
        if conversation_id:
            args.append(conversation_id)
            where.append(f"conversation_id = ${len(args)}")
        if before:
            args.append(before)
            where.append(f"seq < (SELECT seq FROM messages WHERE id = ${len(args)})")
        query = (
            "SELECT id, conversation_id, role, content, model, tokens, created_at, key_id FROM messages "
            f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ${len(args) + 1}"
        )
        rows = await self.pool.fetch(query, *args, limit + 1)
        items = [
            {
                "id": r["id"],
                "conversation_id": r["conversation_id"],
                "role": r["role"],
                "content": self.sealer.open(r["content"], r["key_id"]),
                "model": r["model"],
                "tokens": r["tokens"],
                "created_at": r["created_at"],
            }
            for r in rows[:limit]
        ]
        next_before = items[-1]["id"] if len(rows) > limit else None
        return items, next_before

    @property
    def pool(self) -> asyncpg.Pool:
        """The worker's one pool, shared with `client_messages`."""
        assert self._pool is not None, "PostgresHistory.open() has not run"
        return self._pool


class PostgresClientMessages:
    """`history.ClientMessages` over the history's pool. Each statement runs outside any explicit
    transaction (autocommit): a claim is visible to every node at once and never shares a
    rollback with the history writer's batches."""

    def __init__(self, history: PostgresHistory) -> None:
        self.history = history
        self.sealer = history.sealer

    async def claim(self, user: str, client_id: str, conversation_id: str, message_id: str) -> ClientMessage | None:
        """None when the caller now owns `client_id` (and must store the reply under `message_id`
        or `release` it), else the record of whoever claimed it first."""
        status = await self.history.pool.execute(
            "INSERT INTO client_messages (user_name, client_id, conversation_id, message_id, claimed_at) "
            f"VALUES ($1, $2, $3, $4, {DB_NOW}) ON CONFLICT (user_name, client_id) DO NOTHING",
            user,
            client_id,
            conversation_id,
            message_id,
        )
        if status == "INSERT 0 1":
            return None
        return await self.get(user, client_id)

    async def renew(self, user: str, client_id: str, message_id: str) -> None:
        """The holder's sign of life while it generates: the claim is not silent any more."""
        await self.history.pool.execute(
            f"UPDATE client_messages SET claimed_at = {DB_NOW} "
            "WHERE user_name = $1 AND client_id = $2 AND message_id = $3",
            user,
            client_id,
            message_id,
        )

    async def take_over(
        self, user: str, client_id: str, stale_message_id: str, message_id: str, silent_for: float
    ) -> bool:
        """Claim an id whose holder has given no sign of life for `silent_for` seconds; false when
        someone else was quicker, or the holder renewed it meanwhile."""
        status = await self.history.pool.execute(
            f"UPDATE client_messages SET message_id = $1, claimed_at = {DB_NOW} "
            f"WHERE user_name = $2 AND client_id = $3 AND message_id = $4 AND claimed_at < {DB_NOW} - $5",
            message_id,
            user,
            client_id,
            stale_message_id,
            silent_for,
        )
        return status == "UPDATE 1"

    async def release(self, user: str, client_id: str, message_id: str) -> None:
        """Drop a claim whose reply failed, so that a re-send tries again."""
        await self.history.pool.execute(
            "DELETE FROM client_messages WHERE user_name = $1 AND client_id = $2 AND message_id = $3",
            user,
            client_id,
            message_id,
        )

    async def get(self, user: str, client_id: str) -> ClientMessage | None:
        rows = await self._select("c.user_name = $1 AND c.client_id = $2", [user, client_id], 1)
        return rows[0] if rows else None

    async def answered_after(self, user: str, last_client_id: str | None, limit: int) -> list[ClientMessage] | None:
        """The user's answered ids claimed after `last_client_id` (all when None), oldest first, at
        most the newest `limit`; None when `last_client_id` is unknown."""
        where, args = "c.user_name = $1 AND m.id IS NOT NULL", [user]
        if last_client_id is not None:
            if await self.get(user, last_client_id) is None:
                return None
            where += " AND c.seq > (SELECT seq FROM client_messages WHERE user_name = $1 AND client_id = $2)"
            args.append(last_client_id)
        return list(reversed(await self._select(where, args, limit, newest_first=True)))

    async def _select(self, where: str, args: list[str], limit: int, newest_first: bool = False) -> list[ClientMessage]:
        query = (
            f"SELECT c.client_id, c.conversation_id, c.message_id, {DB_NOW} - c.claimed_at, "
            "m.content, m.model, m.key_id FROM client_messages c LEFT JOIN messages m ON m.id = c.message_id "
            f"WHERE {where} ORDER BY c.seq {'DESC' if newest_first else 'ASC'} LIMIT ${len(args) + 1}"
        )
        rows = await self.history.pool.fetch(query, *args, limit)
        return [
            ClientMessage(r[0], r[1], r[2], r[3], self.sealer.open(r[4], r[6]) if r[4] is not None else None, r[5])
            for r in rows
        ]
