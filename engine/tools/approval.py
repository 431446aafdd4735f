"""Human approval of machine tools: the engine asks the user in their channel and waits for a yes.

Policy (tools.approval.machine): `never`; `tainted` (the default): a machine tool needs a yes once
the request has seen text from the network (a tool result marked tainted in this request, or an
earlier tool result in the conversation from a tool that is not known to be safe); `always`:
every machine tool call needs one. Prompt injection through a fetched page is the attack this
stops: the page's text may ask the model for `shell`, and the user then sees the question.

How a question travels: the request's channel gives an `Ask` (the websocket sends an
`approval_request` frame, a webhook channel sends "Run shell with {...}? Reply yes or no"); a
channel without one (the REST API and its SSE stream cannot ask mid-request) refuses the call
with a tool error saying so. The question is written to a `Store` because the answer may reach
another worker than the one waiting (a webhook is any worker's request, a websocket may reconnect
elsewhere): `ApprovalStore`, a SQLite file in data_dir shared by the node's workers, or, when the
history is in PostgreSQL, `PostgresApprovalStore` (approval_postgres.py), shared by every node;
the waiting request polls it until the answer or `timeout_seconds`. No answer is a no. A question
expires with its `timeout_seconds` in the store too: when its worker dies waiting, nothing can
answer it (a later "yes" in the chat is an ordinary message), and the next question asked clears
it away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from ..logs import audit, event
from ..settings import ApprovalSettings
from .base import Message, Tool

LOG = logging.getLogger("engine.tools")
_POLL_SECONDS = 0.1
_ARGUMENTS_SHOWN = 300  # characters of the arguments a chat message shows
YES = frozenset({"yes", "y", "ok", "approve", "allow", "run"})
NO = frozenset({"no", "n", "deny", "decline", "stop", "cancel"})


@dataclass(frozen=True)
class Question:
    """One approval the engine asks for; `id` is what the answer names (the websocket's frame)."""

    id: str
    tool: str
    arguments: str  # the model's JSON arguments, as it sent them
    timeout_seconds: float

    def text(self) -> str:
        """The question as one chat message."""
        shown = self.arguments if len(self.arguments) <= _ARGUMENTS_SHOWN else self.arguments[:_ARGUMENTS_SHOWN] + "…"
        return f"Run {self.tool} with {shown or '{}'}? Reply yes or no (within {self.timeout_seconds:g} s)."


Ask = Callable[[Question], Awaitable[None]]
Emit = Callable[[dict[str, Any]], None]


def answer_of(text: str) -> bool | None:
    """True for a yes, False for a no, None for any other message (a new chat turn)."""
    word = text.strip().strip(".!").lower()
    return True if word in YES else False if word in NO else None


class Store(Protocol):
    """Where questions wait for their answers; `errors` are the exceptions its backend raises."""

    errors: tuple[type[Exception], ...]

    async def open(self, question: Question, user: str, chat: str) -> None: ...
    async def answer(self, question_id: str, user: str, approve: bool) -> bool: ...
    async def answer_latest(self, user: str, chat: str, approve: bool) -> bool: ...
    async def wait(self, question_id: str, timeout: float) -> bool | None: ...


class ApprovalStore:
    """Open questions and their answers, in `<data_dir>/approvals.sqlite3` (every worker of the node).

    A question is keyed by its id, and belongs to a user and a chat (a webhook's conversation) so
    that a plain "yes" in that chat answers the newest open question there. Each operation opens
    its own connection and closes it: approvals are rare, and an aiosqlite connection left open
    would keep a worker's thread (and so the worker) alive at shutdown."""

    errors: tuple[type[Exception], ...] = (OSError, aiosqlite.Error)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False

    @contextlib.asynccontextmanager
    async def _db(self) -> AsyncIterator[aiosqlite.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(self.path, isolation_level=None) as db:
            for pragma in ("journal_mode=WAL", "busy_timeout=5000"):
                await db.execute(f"PRAGMA {pragma}")
            if not self._ready:
                await self._create(db)
                self._ready = True
            yield db

    @staticmethod
    async def _create(db: aiosqlite.Connection) -> None:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS approvals (id TEXT PRIMARY KEY, user TEXT NOT NULL, chat TEXT NOT NULL, "
            "tool TEXT NOT NULL, asked_at REAL NOT NULL, answer INTEGER, expires_at REAL)"
        )
        await db.execute("CREATE INDEX IF NOT EXISTS approvals_chat ON approvals (user, chat, asked_at)")
        async with db.execute("PRAGMA table_info(approvals)") as cursor:
            columns = {row[1] for row in await cursor.fetchall()}
        if "expires_at" not in columns:  # a file of an older engine: its questions count as expired
            with contextlib.suppress(aiosqlite.OperationalError):  # another worker was quicker
                await db.execute("ALTER TABLE approvals ADD COLUMN expires_at REAL")

    async def open(self, question: Question, user: str, chat: str) -> None:
        """Ask `question`; the questions whose time is up go (their waiters died with their worker)."""
        now = time.time()
        async with self._db() as db:
            await db.execute(
                "DELETE FROM approvals WHERE answer IS NULL AND (expires_at IS NULL OR expires_at <= ?)", (now,)
            )
            await db.execute(
                "INSERT INTO approvals (id, user, chat, tool, asked_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (question.id, user, chat, question.tool, now, now + question.timeout_seconds),
            )

    async def answer(self, question_id: str, user: str, approve: bool) -> bool:
        """Answer the user's open question `question_id`; False when there is none (answered, gone,
        or its time is up)."""
        async with self._db() as db:
            cursor = await db.execute(
                "UPDATE approvals SET answer = ? WHERE id = ? AND user = ? AND answer IS NULL AND expires_at > ?",
                (int(approve), question_id, user, time.time()),
            )
            return cursor.rowcount == 1

    async def answer_latest(self, user: str, chat: str, approve: bool) -> bool:
        """Answer the newest open question of `user` in `chat`; False when none is open."""
        async with self._db() as db:
            cursor = await db.execute(
                "UPDATE approvals SET answer = ? WHERE id = (SELECT id FROM approvals WHERE user = ? AND chat = ? "
                "AND answer IS NULL AND expires_at > ? ORDER BY asked_at DESC LIMIT 1)",
                (int(approve), user, chat, time.time()),
            )
            return cursor.rowcount == 1

    async def wait(self, question_id: str, timeout: float) -> bool | None:
        """The answer to `question_id`, or None after `timeout` seconds; the question is then gone
        (a late answer finds nothing to answer)."""
        async with self._db() as db:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        async with db.execute("SELECT answer FROM approvals WHERE id = ?", (question_id,)) as cursor:
                            row = await cursor.fetchone()
                        if row is not None and row[0] is not None:
                            return bool(row[0])
                        await asyncio.sleep(_POLL_SECONDS)
            except TimeoutError:
                return None
            finally:  # answered, timed out or cancelled with its request: nobody waits any more
                await db.execute("DELETE FROM approvals WHERE id = ?", (question_id,))


_STORES: dict[Path, Store] = {}


def use_store(data_dir: Path, store: Store) -> None:
    """Make `store` the one `store_for(data_dir)` returns in this worker (the runtime calls it at
    start when the history, and so the approvals, are in PostgreSQL)."""
    _STORES[Path(data_dir) / "approvals.sqlite3"] = store


def store_for(data_dir: Path) -> Store:
    """The store for `data_dir`: the one `use_store` set, else the node's SQLite file (it holds no
    connection: see ApprovalStore)."""
    path = Path(data_dir) / "approvals.sqlite3"
    if path not in _STORES:
        _STORES[path] = ApprovalStore(path)
    return _STORES[path]


def carries_taint(messages: Sequence[Message], safe: Callable[[str], bool]) -> bool:
    """Whether the conversation holds a tool result from a tool not known to be safe (`safe(name)`):
    the history keeps no taint mark, so an earlier fetch or MCP answer counts as text from the network."""
    names = {
        str(call.get("id")): str((call.get("function") or {}).get("name") or "")
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or ()
    }
    return any(m.get("role") == "tool" and not safe(names.get(str(m.get("tool_call_id")), "")) for m in messages)


@dataclass
class Gate:
    """One request's approvals. `chat` is where a plain yes/no answers (a webhook's conversation);
    `ask` is None when the channel cannot ask."""

    settings: ApprovalSettings
    store: Store
    user: str
    channel: str
    chat: str
    request_id: str
    ask: Ask | None
    tainted: bool = False

    def needs(self, tool: Tool) -> bool:
        policy = self.settings.machine
        return tool.risk == "machine" and (policy == "always" or (policy == "tainted" and self.tainted))

    async def check(self, tool: Tool, arguments: str | None, call_id: str, emit: Emit) -> str | None:
        """None when `tool` may run; else the sentence for the model. Emits `approval` events."""
        if not self.needs(tool):
            return None
        why = "this request has read text from the network" if self.tainted else "tools.approval says always"
        if self.ask is None:
            self._record(tool, call_id, "unavailable", emit)
            return (
                f"'{tool.name}' needs the user's approval ({why}), and the {self.channel} channel cannot ask for "
                "it; tell the user to ask again on a channel that can (the websocket or a chat platform)"
            )
        question = Question(os.urandom(12).hex(), tool.name, arguments or "", self.settings.timeout_seconds)
        try:
            await self.store.open(question, self.user, self.chat)
            await self.ask(question)
            self._record(tool, call_id, "asked", emit, question.id)
            answer = await self.store.wait(question.id, question.timeout_seconds)
        except self.store.errors as exc:
            event(LOG, logging.WARNING, f"approval not asked: {exc}", request_id=self.request_id, tool=tool.name)
            self._record(tool, call_id, "failed", emit, question.id)
            return f"'{tool.name}' needs the user's approval and it could not be asked just now"
        state = "approved" if answer else "timeout" if answer is None else "declined"
        self._record(tool, call_id, state, emit, question.id)
        if answer:
            return None
        if answer is None:
            return f"'{tool.name}' was not run: the user gave no answer within {question.timeout_seconds:g} s"
        return f"'{tool.name}' was not run: the user declined"

    def _record(self, tool: Tool, call_id: str, state: str, emit: Emit, question_id: str = "") -> None:
        fields = {
            "request_id": self.request_id,
            "user": self.user,
            "channel": self.channel,
            "tool": tool.name,
            "state": state,
            "tainted": self.tainted,
        }
        audit("tool_approval", **fields, approval_id=question_id)
        emit({"event": "approval", "call_id": call_id, "name": tool.name, "state": state, "approval_id": question_id})


def arguments_object(arguments: str) -> Any:
    """The model's arguments as JSON for a frame (the raw text when they are not JSON)."""
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments
