"""Conversation history in SQLite (WAL) through aiosqlite, so queries run off the event loop.

Writes are group-committed on a connection and thread of their own (history/writer.py):
concurrent requests' rows go into one transaction, and each request still waits until its own
rows are durable. Stored text is PII-masked, then sealed (encrypted
when a history key is configured); each message row carries the id of the key that sealed it.
Deleting, listing and the background upkeep live in history/lifecycle_sqlite.py.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from ..security.crypto import Keyring
from ..security.pii import Masker
from .lifecycle_sqlite import SqliteLifecycle, migrate
from .writer import BatchWriter

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
    created_at REAL NOT NULL,
    key_id TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_user ON messages(user, seq);
"""


def new_id() -> str:
    """128 random bits as 32 hex digits, the shape uuid4().hex had, at a quarter of its cost (up
    to three ids per chat request)."""
    return secrets.token_hex(16)


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


# A tool loop's messages are rows too, so that a conversation can go on after it: the assistant's
# turn that asked for tools is a `tool_calls` row, each result a `tool` row, their content JSON
# (what the message holds beyond a role). Plain turns stay plain text.
TOOL_ROLES = ("tool_calls", "tool")


def tool_rows(conversation_id: str, user: str, messages: list[dict[str, Any]], model: str | None) -> list[Row]:
    """Rows for the messages of a tool loop (engine/tools/loop.py `added`), in order."""
    rows = []
    for m in messages:
        if m["role"] == "tool":
            content = {"tool_call_id": m["tool_call_id"], "content": m["content"]}
            rows.append(Row(new_id(), conversation_id, user, "tool", json.dumps(content, ensure_ascii=False)))
        else:
            content = {"content": m.get("content"), "tool_calls": m["tool_calls"]}
            rows.append(
                Row(new_id(), conversation_id, user, "tool_calls", json.dumps(content, ensure_ascii=False), model)
            )
    return rows


def model_messages(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored rows as model messages: tool rows back in OpenAI's shape. Tool results whose call
    fell out of the context window are dropped (a model refuses an orphan result), and so is every
    tool row when one cannot be read."""
    messages: list[dict[str, Any]] = []
    try:
        for m in stored:
            role = m["role"]
            if role == "tool_calls":
                data = json.loads(m["content"])
                messages.append({"role": "assistant", "content": data["content"], "tool_calls": data["tool_calls"]})
            elif role == "tool":
                if not messages:
                    continue  # its call is older than the window
                data = json.loads(m["content"])
                messages.append({"role": "tool", "tool_call_id": data["tool_call_id"], "content": data["content"]})
            else:
                messages.append(m)
    except (ValueError, KeyError, TypeError):
        return [m for m in stored if m["role"] not in TOOL_ROLES]
    return messages


class OwnedConversations:
    """Who may read a conversation, the same for every history backend; a backend provides
    `owner` and `_last_messages`."""

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
        stored = await self._last_messages(conversation_id, limit)
        if any(m["role"] in TOOL_ROLES for m in stored):
            return model_messages(stored)
        return stored

    async def owner(self, conversation_id: str) -> str | None:
        raise NotImplementedError

    async def _last_messages(self, conversation_id: str, limit: int) -> list[dict[str, str]]:
        raise NotImplementedError


class History(OwnedConversations):
    def __init__(self, data_dir: str, sealer: Keyring, masker: Masker) -> None:
        self.path = Path(data_dir) / "history.sqlite3"
        self.sealer = sealer
        self.masker = masker
        self.db: aiosqlite.Connection | None = None
        self._writer = BatchWriter(self.path, lambda text: sealer.seal(masker.mask(text)))
        self.client_messages = ClientMessages(self.path, sealer)
        self.lifecycle = SqliteLifecycle(self.path, sealer)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = await aiosqlite.connect(self.path)
        # Several workers share the file: WAL lets readers run beside the writer, busy_timeout
        # makes a writer wait for another worker's transaction instead of failing.
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.executescript(_SCHEMA)
        await self.db.commit()
        await migrate(self.db)
        await self._writer.start()
        await self.client_messages.open()
        await self.lifecycle.open()

    async def close(self) -> None:
        await self._writer.close()
        if self.db:
            await self.db.close()
            self.db = None
        await self.client_messages.close()
        await self.lifecycle.close()

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

    async def _last_messages(self, conversation_id: str, limit: int) -> list[dict[str, str]]:
        assert self.db is not None
        query = "SELECT role, content, key_id FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?"
        async with self.db.execute(query, (conversation_id, limit)) as cursor:
            rows = await cursor.fetchall()
        return [
            {"role": role, "content": self.sealer.open(content, key_id)} for role, content, key_id in reversed(rows)
        ]

    async def append(self, rows: list[Row]) -> None:
        """Store rows (one conversation each call); returns once they are committed."""
        await self._writer.write(rows)

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
            "SELECT id, conversation_id, role, content, model, tokens, created_at, key_id FROM messages "
            f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        )
        async with self.db.execute(query, (*args, limit + 1)) as cursor:
            rows = await cursor.fetchall()
        items = [
            {
                "id": r[0],
                "conversation_id": r[1],
                "role": r[2],
                "content": self.sealer.open(r[3], r[7]),
                "model": r[4],
                "tokens": r[5],
                "created_at": r[6],
            }
            for r in rows[:limit]
        ]
        next_before = items[-1]["id"] if len(rows) > limit else None
        return items, next_before


# --- client message ids (the websocket channel's idempotent resend) ----------------------------

_CLIENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS client_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    client_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    UNIQUE (user, client_id)
);
"""


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A client's message id and the reply it maps to; `reply` is None while it is being generated."""

    client_id: str
    conversation_id: str
    message_id: str
    silent_seconds: float  # since its holder last claimed or renewed it, by the store's clock
    reply: str | None
    model: str | None


class ClientMessages:
    """Client message id -> reply, so a client that re-sends an id gets the stored reply.

    A row is a claim: whoever inserted it generates the reply and stores it as the assistant row
    `message_id` of `messages`; the reply exists once that row is committed, so storing a reply is
    one ordinary `History.append`. This class has its own connection in autocommit mode: a claim
    must be visible to the other workers at once and must never share a transaction (or a
    rollback) with the history writer's batches.
    """

    def __init__(self, path: Path, sealer: Keyring) -> None:
        self.path = path
        self.sealer = sealer
        self.db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA busy_timeout=5000")
        await self.db.execute("PRAGMA secure_delete=ON")  # `release` deletes: leave no text in free pages
        await self.db.executescript(_CLIENT_SCHEMA)

    async def close(self) -> None:
        if self.db:
            await self.db.close()
            self.db = None

    async def claim(self, user: str, client_id: str, conversation_id: str, message_id: str) -> ClientMessage | None:
        """None when the caller now owns `client_id` (and must store the reply under `message_id`
        or `release` it), else the record of whoever claimed it first."""
        assert self.db is not None
        cursor = await self.db.execute(
            "INSERT INTO client_messages (user, client_id, conversation_id, message_id, claimed_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user, client_id) DO NOTHING",
            (user, client_id, conversation_id, message_id, time.time()),
        )
        if cursor.rowcount == 1:
            return None
        return await self.get(user, client_id)

    async def renew(self, user: str, client_id: str, message_id: str) -> None:
        """The holder's sign of life while it generates: the claim is not silent any more."""
        assert self.db is not None
        await self.db.execute(
            "UPDATE client_messages SET claimed_at = ? WHERE user = ? AND client_id = ? AND message_id = ?",
            (time.time(), user, client_id, message_id),
        )

    async def take_over(
        self, user: str, client_id: str, stale_message_id: str, message_id: str, silent_for: float
    ) -> bool:
        """Claim an id whose holder has given no sign of life for `silent_for` seconds; false when
        someone else was quicker, or the holder renewed it meanwhile."""
        assert self.db is not None
        now = time.time()
        cursor = await self.db.execute(
            "UPDATE client_messages SET message_id = ?, claimed_at = ? "
            "WHERE user = ? AND client_id = ? AND message_id = ? AND claimed_at < ?",
            (message_id, now, user, client_id, stale_message_id, now - silent_for),
        )
        return cursor.rowcount == 1

    async def release(self, user: str, client_id: str, message_id: str) -> None:
        """Drop a claim whose reply failed, so that a re-send tries again."""
        assert self.db is not None
        await self.db.execute(
            "DELETE FROM client_messages WHERE user = ? AND client_id = ? AND message_id = ?",
            (user, client_id, message_id),
        )

    async def get(self, user: str, client_id: str) -> ClientMessage | None:
        rows = await self._select("c.user = ? AND c.client_id = ?", (user, client_id), 1)
        return rows[0] if rows else None

    async def answered_after(self, user: str, last_client_id: str | None, limit: int) -> list[ClientMessage] | None:
        """The user's answered ids claimed after `last_client_id` (all when None), oldest first, at
        most the newest `limit`; None when `last_client_id` is unknown."""
        where, args = "c.user = ? AND m.id IS NOT NULL", [user]
        if last_client_id is not None:
            last = await self.get(user, last_client_id)
            if last is None:
                return None
            where += " AND c.seq > (SELECT seq FROM client_messages WHERE user = ? AND client_id = ?)"
            args += [user, last_client_id]
        return list(reversed(await self._select(where, tuple(args), limit, newest_first=True)))

    async def _select(
        self, where: str, args: tuple[str, ...], limit: int, newest_first: bool = False
    ) -> list[ClientMessage]:
        assert self.db is not None
        query = (
            "SELECT c.client_id, c.conversation_id, c.message_id, ? - c.claimed_at, m.content, m.model, m.key_id "
            "FROM client_messages c LEFT JOIN messages m ON m.id = c.message_id "
            f"WHERE {where} ORDER BY c.seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        )
        async with self.db.execute(query, (time.time(), *args, limit)) as cursor:
            rows = await cursor.fetchall()
        return [
            ClientMessage(r[0], r[1], r[2], r[3], self.sealer.open(r[4], r[6]) if r[4] is not None else None, r[5])
            for r in rows
        ]
