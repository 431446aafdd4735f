"""Conversation history in SQLite (WAL) through aiosqlite, so queries run off the event loop.

Writes are group-committed: concurrent requests' rows go into one transaction, and each request
still waits until its own rows are durable. Stored text is PII-masked, then sealed (encrypted
when a history key is configured).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from .crypto import Sealer
from .pii import Masker

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    model TEXT,
    tokens INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_user ON messages(user, seq);
"""
_BATCH = 512


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    conversation_id: str
    user: str
    role: str
    content: str
    model: str | None = None
    tokens: int = 0


class ConversationNotFound(Exception):
    pass


class History:
    def __init__(self, data_dir: str, sealer: Sealer, masker: Masker) -> None:
        self.path = Path(data_dir) / "history.sqlite3"
        self.sealer = sealer
        self.masker = masker
        self.db: aiosqlite.Connection | None = None
        self._pending: asyncio.Queue[tuple[list[Row], asyncio.Future[None]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = await aiosqlite.connect(self.path)
        # Several workers share the file: WAL lets readers run beside the writer, busy_timeout
        # makes a writer wait for another worker's transaction instead of failing.
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.executescript(_SCHEMA)
        await self.db.commit()
        self._writer = asyncio.create_task(self._write_loop())

    async def close(self) -> None:
        if self._writer:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self.db:
            await self.db.close()
            self.db = None

    async def ping(self) -> bool:
        try:
            assert self.db is not None
            async with self.db.execute("SELECT 1") as cursor:
                return (await cursor.fetchone()) == (1,)
        except Exception:  # noqa: BLE001 - readiness reports any storage failure as "not ready"
            return False

    async def owner(self, conversation_id: str) -> str | None:
        assert self.db is not None
        async with self.db.execute("SELECT user FROM conversations WHERE id = ?", (conversation_id,)) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def context(self, conversation_id: str, user: str, limit: int) -> list[dict[str, str]]:
        """The last `limit` messages of a conversation, oldest first, as model messages.

        Raises ConversationNotFound when the conversation belongs to someone else; an unknown id
        is a new conversation.
        """
        owner = await self.owner(conversation_id)
        if owner is None:
            return []
        if owner != user:
            raise ConversationNotFound(conversation_id)
        if limit <= 0:
            return []
        assert self.db is not None
        query = "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?"
        async with self.db.execute(query, (conversation_id, limit)) as cursor:
            rows = await cursor.fetchall()
        return [{"role": role, "content": self.sealer.open(content)} for role, content in reversed(rows)]

    async def append(self, rows: list[Row]) -> None:
        """Store rows (one conversation each call); returns once they are committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((rows, future))
        await future

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._pending.get()]
            while not self._pending.empty() and len(batch) < _BATCH:
                batch.append(self._pending.get_nowait())
            try:
                await self._write(batch)
                outcome: BaseException | None = None
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the writer
                outcome = exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(outcome) if outcome else future.set_result(None)

    async def _write(self, batch: list[tuple[list[Row], asyncio.Future[None]]]) -> None:
        assert self.db is not None
        now = time.time()
        conversations = {}
        messages = []
        for rows, _ in batch:
            for row in rows:
                conversations[row.conversation_id] = (row.conversation_id, row.user, now, now)
                content = self.sealer.seal(self.masker.mask(row.content))
                messages.append((row.id, row.conversation_id, row.user, row.role, content, row.model, row.tokens, now))
        try:
            await self.db.executemany(
                "INSERT INTO conversations (id, user, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
                list(conversations.values()),
            )
            await self.db.executemany(
                "INSERT INTO messages (id, conversation_id, user, role, content, model, tokens, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                messages,
            )
            await self.db.commit()
        except Exception:
            await self.db.rollback()
            raise

    async def page(
        self, user: str, conversation_id: str | None, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Messages newest first; `before` is a message id cursor. Returns (items, next cursor)."""
        assert self.db is not None
        where, args = ["user = ?"], [user]
        if conversation_id:
            where.append("conversation_id = ?")
            args.append(conversation_id)
        if before:
            where.append("seq < (SELECT seq FROM messages WHERE id = ?)")
            args.append(before)
        query = (
            "SELECT id, conversation_id, role, content, model, tokens, created_at FROM messages "
            f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        )
        async with self.db.execute(query, (*args, limit + 1)) as cursor:
            rows = await cursor.fetchall()
        items = [
            {
                "id": r[0],
                "conversation_id": r[1],
                "role": r[2],
                "content": self.sealer.open(r[3]),
                "model": r[4],
                "tokens": r[5],
                "created_at": r[6],
            }
            for r in rows[:limit]
        ]
        next_before = items[-1]["id"] if len(rows) > limit else None
        return items, next_before
