"""The PostgreSQL history's life cycle: the same operations as history/lifecycle_sqlite.py, over the
history's pool, for engine/api/history.py and engine/history/retention.py.

Deleted rows are gone for every query at once; their bytes stay in the table's files (and the
server's WAL) until autovacuum reuses the space and the WAL segments are recycled: PostgreSQL has
no equivalent of SQLite's secure_delete. The upkeep lease is a row, like SQLite's, so that a lease
outlives no node: it expires unless its holder renews it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .lifecycle_sqlite import conversation_item

if TYPE_CHECKING:
    import asyncpg

    from .postgres import PostgresHistory

# Added to databases made before key ids, retention, the conversation list and the Telegram
# poller's shared state (engine/channels/telegram_state.py) (idempotent; runs under the schema's
# advisory lock).
UPGRADE = """
ALTER TABLE messages ADD COLUMN IF NOT EXISTS key_id TEXT;
CREATE INDEX IF NOT EXISTS messages_by_time ON messages(created_at);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations(user_name, created_at);
CREATE TABLE IF NOT EXISTS upkeep (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    key_id TEXT,
    done_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS telegram_offset (id INTEGER PRIMARY KEY CHECK (id = 1), next_update BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS telegram_handled (update_id BIGINT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS telegram_pending (update_id BIGINT PRIMARY KEY, body TEXT NOT NULL);
ALTER TABLE tool_approvals ADD COLUMN IF NOT EXISTS expires_at DOUBLE PRECISION;
CREATE TABLE IF NOT EXISTS telegram_chats (chat TEXT PRIMARY KEY, generation INTEGER NOT NULL DEFAULT 0, model TEXT);
"""
_LEASE = "history"
_PURGE_BATCH = 500


class PostgresLifecycle:
    def __init__(self, history: PostgresHistory) -> None:
        self.history = history
        self.keyring = history.sealer

    @property
    def pool(self) -> asyncpg.Pool:
        return self.history.pool

    async def conversations(self, user: str, limit: int, before: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """The user's conversations, newest first; `before` is a conversation id cursor."""
        where, args = "c.user_name = $1", [user]
        if before:
            args.append(before)
            where += f" AND (c.created_at, c.id) < (SELECT created_at, id FROM conversations WHERE id = ${len(args)})"
        query = (
            "SELECT c.id, c.created_at, c.updated_at, "
            "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), f.content, f.key_id "
            "FROM conversations c LEFT JOIN messages f ON f.seq = "
            "(SELECT min(seq) FROM messages WHERE conversation_id = c.id AND role = 'user') "
            f"WHERE {where} ORDER BY c.created_at DESC, c.id DESC LIMIT ${len(args) + 1}"
        )
        rows = await self.pool.fetch(query, *args, limit + 1)
        items = [conversation_item(self.keyring, *row) for row in rows[:limit]]
        return items, (items[-1]["id"] if len(rows) > limit else None)

    async def delete_conversation(self, conversation_id: str, user: str) -> int | None:
        """Delete one of the user's conversations; the messages deleted, or None when it is not theirs."""
        async with self.pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval("SELECT user_name FROM conversations WHERE id = $1 FOR UPDATE", conversation_id)
            if owner != user:
                return None
            await conn.execute("DELETE FROM client_messages WHERE conversation_id = $1", conversation_id)
            deleted = await conn.execute("DELETE FROM messages WHERE conversation_id = $1", conversation_id)
            await conn.execute("DELETE FROM conversations WHERE id = $1", conversation_id)
        return _count(deleted)

    async def delete_user(self, user: str) -> int:
        """Delete everything of one user; the number of messages deleted."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM client_messages WHERE user_name = $1", user)
            deleted = await conn.execute("DELETE FROM messages WHERE user_name = $1", user)
            await conn.execute("DELETE FROM conversations WHERE user_name = $1", user)
        return _count(deleted)

    async def key_counts(self) -> dict[str | None, int]:
        """Messages per stored key id (None: from before key ids). A full count: for admins."""
        rows = await self.pool.fetch("SELECT key_id, count(*) FROM messages GROUP BY key_id")
        return {row[0]: row[1] for row in rows}

    # --- upkeep (one worker at a time, under the lease) ---------------------------------------

    async def lease(self, holder: str, seconds: float, name: str = _LEASE) -> bool:
        """Take or renew the lease `name` (the upkeep's by default; the Telegram poller has one);
        false while another worker holds an unexpired one."""
        now = time.time()
        status = await self.pool.execute(
            "INSERT INTO upkeep (name, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE "
            "SET holder = excluded.holder, expires_at = excluded.expires_at "
            "WHERE upkeep.expires_at < $4 OR upkeep.holder = excluded.holder",
            name,
            holder,
            now + seconds,
            now,
        )
        return status == "INSERT 0 1"

    async def release(self, holder: str, name: str = _LEASE) -> None:
        await self.pool.execute("UPDATE upkeep SET expires_at = 0 WHERE name = $1 AND holder = $2", name, holder)

    async def purge(self, cutoff: float) -> int:
        """Delete messages older than `cutoff` (in small transactions), then the conversations left
        empty and the client message ids claimed before it; the number of messages deleted."""
        total = 0
        while True:
            status = await self.pool.execute(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE created_at < $1 LIMIT $2)",
                cutoff,
                _PURGE_BATCH,
            )
            total += _count(status)
            if _count(status) < _PURGE_BATCH:
                break
        await self.pool.execute(
            "DELETE FROM conversations WHERE updated_at < $1 "
            "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id)",
            cutoff,
        )
        await self.pool.execute("DELETE FROM client_messages WHERE claimed_at < $1", cutoff)
        return total

    async def rotated_until(self, key_id: str) -> int:
        """The last message seq already re-sealed under `key_id` (0 when rotating to it starts)."""
        row = await self.pool.fetchrow("SELECT key_id, done_seq FROM upkeep WHERE name = $1", _LEASE)
        return row["done_seq"] if row is not None and row["key_id"] == key_id else 0

    async def save_rotated(self, key_id: str, seq: int) -> None:
        await self.pool.execute("UPDATE upkeep SET key_id = $1, done_seq = $2 WHERE name = $3", key_id, seq, _LEASE)

    async def not_under(self, key_id: str, after: int, limit: int) -> list[tuple[int, str, str | None]]:
        """(seq, content, key_id) of the next messages after `after` not sealed with `key_id`."""
        rows = await self.pool.fetch(
            "SELECT seq, content, key_id FROM messages WHERE seq > $1 AND key_id IS DISTINCT FROM $2 "
            "ORDER BY seq LIMIT $3",
            after,
            key_id,
            limit,
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def store_resealed(self, rows: list[tuple[str, str, int, str | None]]) -> None:
        """(content, key id, seq, previous key id) each; a row changed meanwhile is left alone."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "UPDATE messages SET content = $1, key_id = $2 WHERE seq = $3 AND key_id IS NOT DISTINCT FROM $4",
                rows,
            )


def _count(status: str) -> int:
    """The row count of a command status such as "DELETE 3"."""
    return int(status.rsplit(" ", 1)[-1])
