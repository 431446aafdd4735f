"""Telegram by long polling (`channels.telegram.mode: polling`), for hosts Telegram cannot reach.

Every worker starts a poller, and only one polls:
- with the history in PostgreSQL (shared by every node), one per deployment: the worker holding
  the `telegram-poll` lease row (engine/history/lifecycle_postgres.py) polls, renewing it every
  LEASE_SECONDS / 3 and stopping at once if a renewal fails; the others retry every few seconds,
  so after a node dies (even by SIGKILL) another takes over within about LEASE_SECONDS. The offset
  and the pending updates are in PostgreSQL too (telegram_state.PostgresTelegramState);
- otherwise, one per node: the worker holding an exclusive lock on `<data_dir>/telegram-poll.lock`
  (the kernel drops a dead process's lock, even after SIGKILL).

Polling never waits for replies. Each batch is written to telegram_state as pending, in the
transaction that moves the stored offset past it, and the next getUpdates (asked from that offset)
confirms it to Telegram; an update leaves `pending` once its reply is out. So nothing is lost or
answered twice across a crash: a restart, or the next lease holder, first answers what is pending.
The one window left is a crash between a reply reaching Telegram and its row being removed.

One chat's messages are answered in order and the chats side by side: each chat with work has a
task of its own that answers its queue. A yes or no that answers an open approval question is
taken at once, ahead of its chat's queue, where the reply that asked it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from .. import logs
from ..models.adapters.base import UpstreamError
from ..runtime import Runtime
from ..settings import ChannelSettings
from .base import ChannelConfig, Rejected
from .delivery import redacted
from .outbound import Outbound
from .telegram import ALLOWED_UPDATES, Telegram, bot_call, parse_update
from .telegram_answer import answer_message, answers_approval
from .telegram_state import PostgresTelegramState, State, TelegramState

POLL_SECONDS = 25  # getUpdates' long-poll timeout: below Outbound's 30 s read timeout
LEASE_NAME = "telegram-poll"
LEASE_SECONDS = 15.0  # how long a dead node's lease keeps the others from polling
_LOCK_RETRY_SECONDS = 5.0
_ERROR_BACKOFF_SECONDS = 3.0
_ATTEMPTS = 3  # an update whose answering raises is tried this often, then left pending until a restart


def polling(settings: ChannelSettings) -> bool:
    return settings.name == Telegram.name and settings.options.get("mode") == "polling"


def config_of(rt: Runtime, settings: ChannelSettings) -> ChannelConfig:
    secrets = {p: rt.secrets[n] for p, n in settings.secrets.items() if rt.secrets.get(n)}
    return ChannelConfig(settings, secrets, (settings.api_base or Telegram.default_api_base).rstrip("/"))


class TelegramPoller:
    """Start with `start()` once the runtime is up; `close()` stops polling and answering."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.channel = Telegram()
        self._task: asyncio.Task[None] | None = None
        self._lock: TextIO | None = None
        self._state: State | None = None
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._keeper: asyncio.Task[None] | None = None  # renews the shared lease while it is held

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telegram-poller")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            with contextlib.suppress(Exception):  # handing over now rather than at expiry is a courtesy
                await self.rt.history.lifecycle.release(self._holder, LEASE_NAME)
        if self._state is not None:
            await self._state.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock

    def _settings(self) -> ChannelSettings | None:
        return next((c for c in self.rt.settings.channels if polling(c)), None)

    def _locked(self) -> bool:
        if self._lock is not None:
            return True
        path = Path(self.rt.settings.data_dir) / "telegram-poll.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - held open for as long as this worker polls
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock = handle
        logs.event(logs.APP, logging.INFO, f"telegram poller started in worker pid {os.getpid()}", channel="telegram")
        return True

    def _shared(self) -> bool:
        return self.rt.settings.history_backend == "postgres"

    async def _leased(self) -> bool:
        """Whether this worker holds the deployment's lease (taking it when it is free)."""
        if self._keeper is not None and not self._keeper.done():
            return True
        if not await self.rt.history.lifecycle.lease(self._holder, LEASE_SECONDS, LEASE_NAME):
            return False
        message = f"telegram poller started in worker pid {os.getpid()} holding the deployment's lease"
        logs.event(logs.APP, logging.INFO, message, channel="telegram")
        self._keeper = asyncio.create_task(self._keep_lease(), name="telegram-poll-lease")
        return True

    async def _keep_lease(self) -> None:
        """Returns when the lease is lost (or cannot be renewed): polling must stop at once."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                if not await self.rt.history.lifecycle.lease(self._holder, LEASE_SECONDS, LEASE_NAME):
                    break
            except Exception as exc:  # noqa: BLE001 - unsure whether it is still held: stop polling
                logs.event(logs.APP, logging.WARNING, f"telegram poll lease not renewed: {exc!r}", channel="telegram")
                break
        logs.event(logs.APP, logging.WARNING, "telegram poller stopped: lease lost", channel="telegram")

    async def _polls(self) -> bool:
        try:
            return await self._leased() if self._shared() else self._locked()
        except Exception as exc:  # noqa: BLE001 - the database is away: retry later
            logs.event(logs.APP, logging.WARNING, f"telegram poll lease not taken: {exc!r}", channel="telegram")
            return False

    async def _open_state(self) -> State:
        if self._shared():
            return PostgresTelegramState(self.rt.history.pool)
        return await TelegramState.open(self.rt.settings.data_dir)

    async def _serve_under_lease(self, config: ChannelConfig, state: State) -> None:
        """`_serve`, cancelled with every reply in progress if the shared lease is lost meanwhile (the
        next holder answers what is still pending)."""
        if self._keeper is None:
            await self._serve(config, state)
            return
        work = asyncio.create_task(self._serve(config, state))
        await asyncio.wait({work, self._keeper}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return
        work.result()

    async def _run(self) -> None:
        while True:
            settings = self._settings()
            if settings is None or not await self._polls():  # polling switched off, or another worker polls
                await asyncio.sleep(_LOCK_RETRY_SECONDS)
                continue
            config = config_of(self.rt, settings)
            try:
                if self._state is None:
                    self._state = await self._open_state()
                await self._serve_under_lease(config, self._state)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug, or the state's database away: logged, polling goes on
                logs.APP.exception("telegram poller failed", extra={"fields": {"channel": "telegram"}})
                await asyncio.sleep(_ERROR_BACKOFF_SECONDS)

    async def _serve(self, config: ChannelConfig, state: State) -> None:
        """Answer what is pending, then poll and answer; returns when the channel's settings or
        secrets change (a reload), so that `_run` starts again with the new ones."""
        outbound = Outbound(self.rt.clients, config.api_base)
        async with asyncio.TaskGroup() as group:
            chats = _ChatQueues(group, lambda update: self._handle(config, state, update))
            for update in await state.pending():
                chats.put(update)
            while config == self._current_config():
                body = {
                    "offset": await state.offset(),
                    "timeout": POLL_SECONDS,
                    "allowed_updates": list(ALLOWED_UPDATES),
                }
                try:
                    updates = await bot_call(outbound, config, "getUpdates", body)
                except UpstreamError as exc:
                    message = redacted(str(exc), config)
                    logs.event(logs.APP, logging.WARNING, f"telegram getUpdates failed: {message}", channel="telegram")
                    await asyncio.sleep(_ERROR_BACKOFF_SECONDS)
                    continue
                batch = [u for u in updates or () if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
                if not batch:
                    continue
                for update in await state.hold(batch):
                    if not await self._answered_approval(config, state, update):
                        chats.put(update)

    def _current_config(self) -> ChannelConfig | None:
        settings = self._settings()
        return None if settings is None else config_of(self.rt, settings)

    async def _answered_approval(self, config: ChannelConfig, state: State, update: dict[str, Any]) -> bool:
        """Whether `update` is a yes or no that answered an open approval question (and is handled)."""
        try:
            inbounds = parse_update(update)
        except Rejected:
            return False
        for inbound in inbounds:
            if await answers_approval(self.rt, config, state, inbound):
                await state.mark_handled(update["update_id"])
                return True
        return False

    async def _handle(self, config: ChannelConfig, state: State, update: dict[str, Any]) -> None:
        """Answer `update` and mark it handled. A failure is retried, then the update is left pending
        (answered after the next restart) and its chat's next update goes on: raising here would stop
        every other chat's reply."""
        update_id = update["update_id"]
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                try:
                    inbounds = parse_update(update)
                except Rejected:
                    inbounds = []
                for inbound in inbounds:
                    await answer_message(self.rt, config, state, inbound)
                await state.mark_handled(update_id)
                return
            except Exception as exc:  # noqa: BLE001 - logged, retried, then left pending
                message = redacted(repr(exc), config)
                level = logging.WARNING if attempt < _ATTEMPTS else logging.ERROR
                then = "trying again" if attempt < _ATTEMPTS else "left pending until the engine restarts"
                logs.event(
                    logs.APP, level, f"telegram update {update_id} failed: {message}; {then}", channel="telegram"
                )
                if attempt < _ATTEMPTS:
                    await asyncio.sleep(_ERROR_BACKOFF_SECONDS)


class _ChatQueues:
    """Updates answered one chat at a time in order, the chats side by side: a chat with work has
    one task (in `group`) that answers its queue and ends when the queue is empty."""

    def __init__(self, group: asyncio.TaskGroup, handle: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._group = group
        self._handle = handle
        self._queues: dict[Any, deque[dict[str, Any]]] = {}

    def put(self, update: dict[str, Any]) -> None:
        chat = _chat_of(update)
        if chat in self._queues:
            self._queues[chat].append(update)
            return
        self._queues[chat] = deque([update])
        self._group.create_task(self._answer(chat))

    async def _answer(self, chat: Any) -> None:
        queue = self._queues[chat]
        try:
            while queue:
                await self._handle(queue[0])
                queue.popleft()
        finally:
            del self._queues[chat]


def _chat_of(update: dict[str, Any]) -> Any:
    message = update.get("message")
    chat = message.get("chat") if isinstance(message, dict) else None
    return chat.get("id") if isinstance(chat, dict) else None
