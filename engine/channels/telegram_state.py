"""What the Telegram poller and commands keep: the getUpdates offset, the updates received but not
yet answered, and each chat's conversation generation (/reset) and model (/model).

`TelegramState`: one SQLite file under data_dir, shared by the node's workers (only the worker
holding the poll lock writes the offset). `PostgresTelegramState`: the same in the PostgreSQL
history's tables (made with its schema, engine/history/lifecycle_postgres.py), shared by every
node, so that whichever node holds the poll lease continues from where the last one stopped.

Why a `pending` table: getUpdates(offset=N) forgets every update below N, so before the poller
asks past an update (which it does without waiting for replies) the update is written here, in
the same transaction that moves the offset; it leaves once its reply is out. A restart, or the
next lease holder, answers what is still pending. `handled` holds the updates answered under the
previous scheme (the offset moved past a batch only once all of it was answered): an update
Telegram re-sends that is in it is not answered again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiosqlite

if TYPE_CHECKING:
    import asyncpg

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offset (id INTEGER PRIMARY KEY CHECK (id = 1), next_update INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS handled (update_id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pending (update_id INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chats (chat TEXT PRIMARY KEY, generation INTEGER NOT NULL DEFAULT 0, model TEXT);
"""


class State(Protocol):
    async def close(self) -> None: ...
    async def offset(self) -> int: ...
    async def hold(self, updates: list[dict[str, Any]]) -> list[dict[str, Any]]: ...
    async def pending(self) -> list[dict[str, Any]]: ...
    async def mark_handled(self, update_id: int) -> None: ...
    async def chat(self, chat: str) -> tuple[int, str | None]: ...
    async def reset(self, chat: str) -> None: ...
    async def choose_model(self, chat: str, model: str) -> None: ...


class TelegramState:
    """Open with `await TelegramState.open(data_dir)`; close with `close()`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, data_dir: str) -> TelegramState:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(Path(data_dir) / "telegram.sqlite3", isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA busy_timeout=5000")  # the node's other workers read chats too
        await db.executescript(_SCHEMA)
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def offset(self) -> int:
        """The first update id not yet received: what getUpdates asks from (0: all)."""
        async with self._db.execute("SELECT next_update FROM offset WHERE id = 1") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def hold(self, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep `updates` (a getUpdates batch) as pending and move the offset past them, in one
        transaction (synchronously on disk); returns those to answer (not answered before)."""
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            held = []
            for update in updates:
                async with self._db.execute("SELECT 1 FROM handled WHERE update_id = ?", (update["update_id"],)) as c:
                    if await c.fetchone() is not None:
                        continue
                await self._db.execute(
                    "INSERT OR IGNORE INTO pending (update_id, body) VALUES (?, ?)",
                    (update["update_id"], json.dumps(update)),
                )
                held.append(update)
            next_update = max(u["update_id"] for u in updates) + 1
            await self._db.execute(
                "INSERT INTO offset (id, next_update) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET next_update = max(next_update, excluded.next_update)",
                (next_update,),
            )
            await self._db.execute("DELETE FROM handled WHERE update_id < ?", (next_update,))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        return held

    async def pending(self) -> list[dict[str, Any]]:
        """The updates received and not yet answered, oldest first."""
        async with self._db.execute("SELECT body FROM pending ORDER BY update_id") as cursor:
            return [json.loads(row[0]) for row in await cursor.fetchall()]

    async def mark_handled(self, update_id: int) -> None:
        """Recorded (synchronously on disk) as soon as the update's reply is out."""
        await self._db.execute("DELETE FROM pending WHERE update_id = ?", (update_id,))

    async def chat(self, chat: str) -> tuple[int, str | None]:
        """The chat's (generation, chosen model): (0, None) until /reset or /model."""
        async with self._db.execute("SELECT generation, model FROM chats WHERE chat = ?", (chat,)) as cursor:
            row = await cursor.fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    async def reset(self, chat: str) -> None:
        await self._db.execute(
            "INSERT INTO chats (chat, generation) VALUES (?, 1) "
            "ON CONFLICT (chat) DO UPDATE SET generation = generation + 1",
            (chat,),
        )

    async def choose_model(self, chat: str, model: str) -> None:
        await self._db.execute(
            "INSERT INTO chats (chat, model) VALUES (?, ?) ON CONFLICT (chat) DO UPDATE SET model = excluded.model",
            (chat, model),
        )


class PostgresTelegramState:
    """TelegramState's operations over the PostgreSQL history's pool (which it does not close)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def close(self) -> None:
        pass

    async def offset(self) -> int:
        value = await self._pool.fetchval("SELECT next_update FROM telegram_offset WHERE id = 1")
        return int(value) if value is not None else 0

    async def hold(self, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [u["update_id"] for u in updates]
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch("SELECT update_id FROM telegram_handled WHERE update_id = any($1)", ids)
            answered = {row[0] for row in rows}
            held = [u for u in updates if u["update_id"] not in answered]
            await conn.executemany(
                "INSERT INTO telegram_pending (update_id, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [(u["update_id"], json.dumps(u)) for u in held],
            )
            await conn.execute(
                "INSERT INTO telegram_offset (id, next_update) VALUES (1, $1) ON CONFLICT (id) DO UPDATE "
                "SET next_update = greatest(telegram_offset.next_update, excluded.next_update)",
                max(ids) + 1,
            )
            await conn.execute("DELETE FROM telegram_handled WHERE update_id <= $1", max(ids))
        return held

    async def pending(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT body FROM telegram_pending ORDER BY update_id")
        return [json.loads(row[0]) for row in rows]

    async def mark_handled(self, update_id: int) -> None:
        await self._pool.execute("DELETE FROM telegram_pending WHERE update_id = $1", update_id)

    async def chat(self, chat: str) -> tuple[int, str | None]:
        row = await self._pool.fetchrow("SELECT generation, model FROM telegram_chats WHERE chat = $1", chat)
        return (int(row[0]), row[1]) if row else (0, None)

    async def reset(self, chat: str) -> None:
        await self._pool.execute(
            "INSERT INTO telegram_chats (chat, generation) VALUES ($1, 1) "
            "ON CONFLICT (chat) DO UPDATE SET generation = telegram_chats.generation + 1",
            chat,
        )

    async def choose_model(self, chat: str, model: str) -> None:
        await self._pool.execute(
            "INSERT INTO telegram_chats (chat, model) VALUES ($1, $2) "
            "ON CONFLICT (chat) DO UPDATE SET model = excluded.model",
            chat,
            model,
        )
