"""The history's write path: group commit on a SQLite connection and thread of its own.

Requests hand their rows to one writer task (group_commit) and wait for their batch to commit. Each batch is
one hop to the writer thread, which masks and seals the text, runs both inserts and commits:
through aiosqlite the same batch took three hops (two executemany and the commit), each a
thread hand-off plus a wake-up of the event loop, and masking/encryption ran on the event loop.

Durability is unchanged: WAL with synchronous=NORMAL (a commit survives the process crashing;
on power loss the last commits before the next checkpoint can be lost), and `write()` returns
only after the transaction holding its rows has committed. A batch that fails (its transaction
rolled back) is committed again request by request, so only a request whose own rows cannot be
stored fails; the writer keeps running.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from .group_commit import GroupCommit

# The same pragmas the reader connection sets: synchronous is per connection, so it matters here.
_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON")
_CONVERSATIONS = (
    "INSERT INTO conversations (id, user, created_at, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at"
)
_MESSAGES = (
    "INSERT INTO messages (id, conversation_id, user, role, content, model, tokens, created_at, key_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class RowLike(Protocol):
    id: str
    conversation_id: str
    user: str
    role: str
    content: str
    model: str | None
    tokens: int


class BatchWriter:
    def __init__(self, path: Path, prepare: Callable[[str], tuple[str, str]]) -> None:
        """`prepare` turns a message's text into what is stored and the id of the key that sealed
        it (mask, then seal); it runs on the writer thread, so it must be thread-safe (Masker and
        Keyring are: no state per call)."""
        self.path = path
        self.prepare = prepare
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="history-writer")
        self._db: sqlite3.Connection | None = None
        self._group = GroupCommit[list[RowLike]](lambda batch: self._run(self._commit, batch))

    async def start(self) -> None:
        """Open the writer's connection (the schema must exist already) and start the writer task."""
        self._db = await self._run(self._connect)
        self._group.start()

    async def close(self) -> None:
        await self._group.stop()
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=False)

    async def write(self, rows: list[RowLike]) -> None:
        """Store rows; returns once the transaction that holds them has committed."""
        await self._group.submit(rows)

    def _run(self, fn: Callable[..., object], *args: object) -> asyncio.Future:  # type: ignore[type-arg]
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path)  # made on the writer thread, used only there
        for pragma in _PRAGMAS:
            db.execute(f"PRAGMA {pragma}")
        return db

    def _commit(self, batch: list[list[RowLike]]) -> None:
        """On the writer thread: both inserts and the commit, or a rollback."""
        db = self._db
        assert db is not None
        now = time.time()
        conversations = {}
        messages = []
        for rows in batch:
            for row in rows:
                conversations[row.conversation_id] = (row.conversation_id, row.user, now, now)
                content, key_id = self.prepare(row.content)
                messages.append(
                    (row.id, row.conversation_id, row.user, row.role, content, row.model, row.tokens, now, key_id)
                )
        try:
            db.executemany(_CONVERSATIONS, list(conversations.values()))
            db.executemany(_MESSAGES, messages)
            db.commit()
        except Exception:
            db.rollback()
            raise
