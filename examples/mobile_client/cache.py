"""The client's local cache: every message the app sent, kept in a SQLite file until its reply is
delivered, so a message typed offline (or in flight when the app was killed) is sent again by the
next client object that opens the same file.

The `pending` → `done` step is also what makes delivery exactly-once for the app: a reply is handed
over only by the call that moves its message out of `pending` (`settle`), whatever number of
`done` frames the engine sends for that id (a re-send, a resume, another connection).

sqlite3 blocks, so every call runs in a worker thread (`asyncio.to_thread`) behind one lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order the app sent them in
    id TEXT UNIQUE NOT NULL,                -- the client message id the engine keys replies by
    text TEXT NOT NULL,
    conversation_id TEXT,
    model TEXT,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending, done or failed
    reply TEXT,
    error TEXT
);
"""


@dataclass(frozen=True)
class Message:
    id: str
    text: str
    conversation_id: str | None
    model: str | None

    def frame(self) -> dict[str, Any]:
        """The `chat` frame that asks for this message's reply (the same every time it is sent)."""
        frame: dict[str, Any] = {"type": "chat", "id": self.id, "message": self.text}
        if self.conversation_id:
            frame["conversation_id"] = self.conversation_id
        if self.model:
            frame["model"] = self.model
        return frame


class Cache:
    """The SQLite file at `path` (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._call(lambda db: db.executescript(_SCHEMA))

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)

    async def add(self, text: str, conversation_id: str | None = None, model: str | None = None) -> Message:
        """Keep a new message (pending) under a fresh id; it is on disk before it is ever sent."""
        message = Message(uuid.uuid4().hex, text, conversation_id, model)
        await self._call(
            lambda db: db.execute(
                "INSERT INTO messages (id, text, conversation_id, model) VALUES (?, ?, ?, ?)",
                (message.id, text, conversation_id, model),
            )
        )
        return message

    async def pending(self) -> list[Message]:
        """The messages still waiting for a reply, oldest first."""
        rows = await self._call(
            lambda db: db.execute(
                "SELECT id, text, conversation_id, model FROM messages WHERE state = 'pending' ORDER BY seq"
            ).fetchall()
        )
        return [Message(*row) for row in rows]

    async def is_pending(self, client_id: str) -> bool:
        row = await self._call(
            lambda db: db.execute("SELECT 1 FROM messages WHERE id = ? AND state = 'pending'", (client_id,)).fetchone()
        )
        return row is not None

    async def settle(self, client_id: str, reply: str | None = None, error: str | None = None) -> bool:
        """Mark a pending message done (with its reply) or failed; True only for the call that did
        it, which is the one that may hand the outcome to the app."""
        state = "failed" if error is not None else "done"
        cursor = await self._call(
            lambda db: db.execute(
                "UPDATE messages SET state = ?, reply = ?, error = ? WHERE id = ? AND state = 'pending'",
                (state, reply, error, client_id),
            )
        )
        return cursor.rowcount == 1

    async def resume_point(self) -> str | None:
        """The id to resume after: the newest answered message sent before every pending one (the
        engine replays what it answered after that id). None when nothing was answered yet."""
        row = await self._call(
            lambda db: db.execute(
                "SELECT id FROM messages WHERE state = 'done' AND seq < "
                "COALESCE((SELECT MIN(seq) FROM messages WHERE state = 'pending'), 1 << 62) "
                "ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        )
        return row[0] if row else None

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with self._lock:
                if self._db is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                    self._db.execute("PRAGMA journal_mode=WAL")
                return work(self._db)

        return await asyncio.to_thread(run)
