"""The SQLite history's life cycle: listing and deleting conversations, deleting a user, retention,
and the primitives of the background key rotation (engine/history/retention.py drives both).

It has a connection of its own in autocommit mode, with `secure_delete` on: deleted text is
overwritten in the file instead of lingering in free pages, and after a deletion a TRUNCATE
checkpoint empties the WAL, whose older frames still hold the text. Multi-statement changes run
in `BEGIN IMMEDIATE` transactions, waiting (busy_timeout) for the writer of any worker.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from ..security.crypto import Keyring

TITLE_CHARS = 80
_PRAGMAS = ("busy_timeout=5000", "foreign_keys=ON", "secure_delete=ON")
# Added to files made before key ids, retention and the conversation list (idempotent).
_UPGRADE = """
CREATE INDEX IF NOT EXISTS messages_by_time ON messages(created_at);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations(user, created_at);
CREATE TABLE IF NOT EXISTS upkeep (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL,
    key_id TEXT,
    done_seq INTEGER NOT NULL DEFAULT 0
);
"""
_LEASE = "history"
_PURGE_BATCH = 500


async def migrate(db: aiosqlite.Connection) -> None:
    """Bring a history file up to date; safe when several workers run it at once."""
    async with db.execute("PRAGMA table_info(messages)") as cursor:
        columns = {row[1] for row in await cursor.fetchall()}
    if "key_id" not in columns:
        try:
            await db.execute("ALTER TABLE messages ADD COLUMN key_id TEXT")
        except sqlite3.OperationalError as exc:  # another worker was quicker
            if "duplicate column" not in str(exc):
                raise
    await db.executescript(_UPGRADE)
    await db.commit()


class SqliteLifecycle:
    def __init__(self, path: Path, keyring: Keyring) -> None:
        self.path = path
        self.keyring = keyring
        self.db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in _PRAGMAS:
            await self.db.execute(f"PRAGMA {pragma}")

    async def close(self) -> None:
        if self.db:
            await self.db.close()
            self.db = None

    # --- what callers see ---------------------------------------------------------------------

    async def conversations(self, user: str, limit: int, before: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """The user's conversations, newest first; `before` is a conversation id cursor."""
        where, args = "c.user = ?", [user]
        if before:
            where += " AND (c.created_at, c.id) < (SELECT created_at, id FROM conversations WHERE id = ?)"
            args.append(before)
        query = (
            "SELECT c.id, c.created_at, c.updated_at, "
            "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), f.content, f.key_id "
            "FROM conversations c LEFT JOIN messages f ON f.seq = "
            "(SELECT min(seq) FROM messages WHERE conversation_id = c.id AND role = 'user') "
            f"WHERE {where} ORDER BY c.created_at DESC, c.id DESC LIMIT ?"
        )
        rows = await self._fetch(query, (*args, limit + 1))
        items = [conversation_item(self.keyring, *row) for row in rows[:limit]]
        return items, (items[-1]["id"] if len(rows) > limit else None)

    async def delete_conversation(self, conversation_id: str, user: str) -> int | None:
        """Delete one of the user's conversations; the messages deleted, or None when it is not theirs."""

        async def delete(db: aiosqlite.Connection) -> int | None:
            async with db.execute("SELECT user FROM conversations WHERE id = ?", (conversation_id,)) as cursor:
                row = await cursor.fetchone()
            if row is None or row[0] != user:
                return None
            await db.execute("DELETE FROM client_messages WHERE conversation_id = ?", (conversation_id,))
            deleted = await db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            await db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return deleted.rowcount

        found = await self._transaction(delete)
        if found is not None:
            await self.compact()
        return found

    async def delete_user(self, user: str) -> int:
        """Delete everything of one user; the number of messages deleted."""

        async def delete(db: aiosqlite.Connection) -> int:
            await db.execute("DELETE FROM client_messages WHERE user = ?", (user,))
            deleted = await db.execute("DELETE FROM messages WHERE user = ?", (user,))
            await db.execute("DELETE FROM conversations WHERE user = ?", (user,))
            return deleted.rowcount

        count = await self._transaction(delete)
        await self.compact()
        return count

    async def key_counts(self) -> dict[str | None, int]:
        """Messages per stored key id (None: from before key ids). A full count: for admins."""
        return dict(await self._fetch("SELECT key_id, count(*) FROM messages GROUP BY key_id", ()))

    # --- upkeep (one worker at a time, under the lease) ---------------------------------------

    async def lease(self, holder: str, seconds: float, name: str = _LEASE) -> bool:
        """Take or renew the lease `name` (the upkeep's by default); false while another worker
        holds an unexpired one."""
        now = time.time()
        cursor = await self._db.execute(
            "INSERT INTO upkeep (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET holder = excluded.holder, expires_at = excluded.expires_at "
            "WHERE upkeep.expires_at < ? OR upkeep.holder = excluded.holder",
            (name, holder, now + seconds, now),
        )
        return cursor.rowcount == 1

    async def release(self, holder: str, name: str = _LEASE) -> None:
        await self._db.execute("UPDATE upkeep SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder))

    async def purge(self, cutoff: float) -> int:
        """Delete messages older than `cutoff` (in small transactions), then the conversations left
        empty and the client message ids claimed before it; the number of messages deleted."""
        total = 0
        while True:
            cursor = await self._db.execute(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE created_at < ? LIMIT ?)",
                (cutoff, _PURGE_BATCH),
            )
            total += cursor.rowcount
            if cursor.rowcount < _PURGE_BATCH:
                break
        await self._db.execute(
            "DELETE FROM conversations WHERE updated_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id)",
            (cutoff,),
        )
        claims = await self._db.execute("DELETE FROM client_messages WHERE claimed_at < ?", (cutoff,))
        if total or claims.rowcount:
            await self.compact()
        return total

    async def rotated_until(self, key_id: str) -> int:
        """The last message seq already re-sealed under `key_id` (0 when rotating to it starts)."""
        rows = await self._fetch("SELECT key_id, done_seq FROM upkeep WHERE name = ?", (_LEASE,))
        return rows[0][1] if rows and rows[0][0] == key_id else 0

    async def save_rotated(self, key_id: str, seq: int) -> None:
        await self._db.execute("UPDATE upkeep SET key_id = ?, done_seq = ? WHERE name = ?", (key_id, seq, _LEASE))

    async def not_under(self, key_id: str, after: int, limit: int) -> list[tuple[int, str, str | None]]:
        """(seq, content, key_id) of the next messages after `after` not sealed with `key_id`."""
        query = (
            "SELECT seq, content, key_id FROM messages WHERE seq > ? AND (key_id IS NULL OR key_id != ?) "
            "ORDER BY seq LIMIT ?"
        )
        return [tuple(row) for row in await self._fetch(query, (after, key_id, limit))]  # type: ignore[misc]

    async def store_resealed(self, rows: list[tuple[str, str, int, str | None]]) -> None:
        """(content, key id, seq, previous key id) each; a row changed meanwhile is left alone."""

        async def update(db: aiosqlite.Connection) -> None:
            await db.executemany("UPDATE messages SET content = ?, key_id = ? WHERE seq = ? AND key_id IS ?", rows)

        await self._transaction(update)

    async def compact(self) -> None:
        """Copy the WAL into the file and empty it: its frames still hold what was just deleted."""
        await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def _db(self) -> aiosqlite.Connection:
        assert self.db is not None, "SqliteLifecycle.open() has not run"
        return self.db

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        async with self._db.execute(query, args) as cursor:
            return list(await cursor.fetchall())

    async def _transaction(self, work: Any) -> Any:
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            result = await work(db)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        return result


def conversation_item(
    keyring: Keyring, id_: str, created: float, updated: float, count: int, first: str | None, key_id: str | None
) -> dict[str, Any]:
    """One entry of the conversation list, the same for both backends."""
    title = keyring.open(first, key_id)[:TITLE_CHARS] if first is not None else ""
    return {"id": id_, "created_at": created, "updated_at": updated, "messages": count, "title": title}
