"""Telegram by long polling (`channels.telegram.mode: polling`), for hosts Telegram cannot reach.

Every worker starts a poller, and only one polls:
- with the history in PostgreSQL (shared by every node), one per deployment: the worker holding
  the `telegram-poll` lease row (engine/history/lifecycle_postgres.py) polls, renewing it every
  LEASE_SECONDS / 3 and stopping at once if a renewal fails; the others retry every few seconds,
  so after a node dies (even by SIGKILL) another takes over within about LEASE_SECONDS. The offset
  and the answered update ids are in PostgreSQL too (telegram_state.PostgresTelegramState);
- otherwise, one per node: the worker holding an exclusive lock on `<data_dir>/telegram-poll.lock`
  (the kernel drops a dead process's lock, even after SIGKILL).

Neither lost nor answered twice across a crash: getUpdates is asked from the offset stored in
telegram_state (Telegram re-sends every update at or above it), each update is recorded as handled
once its reply is out, and the stored offset moves past a batch only when all of it is handled. A
restart therefore gets the unfinished batch again and answers only what was not answered. The one
window left is a crash between a reply reaching Telegram and its row being written.

A batch is answered chat by chat: one chat's messages in order, the chats side by side, and the
next getUpdates waits for the whole batch. Meanwhile the poller looks every PEEK_SECONDS, without
confirming anything, for a yes or no that answers an approval question the batch's replies asked
(that answer is in a later update, which the next poll would fetch only after the batch: the
question would always time out); such an answer is taken at once and recorded as handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import uuid
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
PEEK_SECONDS = 1.0  # while a batch is answered: how often to look for approval answers


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

    async def _once_under_lease(self, config: ChannelConfig, state: State) -> None:
        """One poll and its batch, cancelled if the shared lease is lost meanwhile (the next holder
        asks again from the stored offset, and answers what this one had not marked handled)."""
        if self._keeper is None:
            await self._once(config, state)
            return
        work = asyncio.create_task(self._once(config, state))
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
                await self._once_under_lease(config, self._state)
            except asyncio.CancelledError:
                raise
            except UpstreamError as exc:
                message = redacted(str(exc), config)
                logs.event(logs.APP, logging.WARNING, f"telegram getUpdates failed: {message}", channel="telegram")
                await asyncio.sleep(_ERROR_BACKOFF_SECONDS)
            except Exception:  # noqa: BLE001 - a bug is logged and polling goes on
                logs.APP.exception("telegram poller failed", extra={"fields": {"channel": "telegram"}})
                await asyncio.sleep(_ERROR_BACKOFF_SECONDS)

    async def _once(self, config: ChannelConfig, state: State) -> None:
        outbound = Outbound(self.rt.clients, config.api_base)
        body = {"offset": await state.offset(), "timeout": POLL_SECONDS, "allowed_updates": list(ALLOWED_UPDATES)}
        updates = await bot_call(outbound, config, "getUpdates", body)
        batch = [u for u in updates or () if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
        if not batch:
            return
        chats: dict[Any, list[dict[str, Any]]] = {}
        for update in batch:
            chats.setdefault(_chat_of(update), []).append(update)
        work = asyncio.gather(*(self._in_order(config, state, u) for u in chats.values()), return_exceptions=True)
        seen = {u["update_id"] for u in batch}
        try:
            while not (await asyncio.wait({work}, timeout=PEEK_SECONDS))[0]:
                await self._take_approval_answers(outbound, config, state, body["offset"], seen)
        except asyncio.CancelledError:
            work.cancel()
            raise
        failed = [result for result in work.result() if isinstance(result, BaseException)]
        if failed:  # what was not handled comes again with the next poll: the offset stays
            raise failed[0]
        await state.advance(max(seen) + 1)

    async def _in_order(self, config: ChannelConfig, state: State, updates: list[dict[str, Any]]) -> None:
        for update in updates:
            await self._handle(config, state, update)

    async def _take_approval_answers(
        self, outbound: Outbound, config: ChannelConfig, state: State, offset: int, seen: set[int]
    ) -> None:
        """Answer approval questions from the updates after the batch; confirms nothing to Telegram
        (the same offset), so every other update comes with the next poll as usual."""
        body = {"offset": offset, "timeout": 0, "allowed_updates": list(ALLOWED_UPDATES)}
        try:
            updates = await bot_call(outbound, config, "getUpdates", body)
        except UpstreamError:
            return  # the next look, or the next poll, tries again
        for update in updates or ():
            update_id = update.get("update_id") if isinstance(update, dict) else None
            if not isinstance(update_id, int) or update_id in seen or await state.is_handled(update_id):
                continue
            try:
                inbounds = parse_update(update)
            except Rejected:
                continue
            for inbound in inbounds:
                if await answers_approval(self.rt, config, state, inbound):
                    await state.mark_handled(update_id)

    async def _handle(self, config: ChannelConfig, state: State, update: dict[str, Any]) -> None:
        update_id = update["update_id"]
        if await state.is_handled(update_id):
            return
        try:
            inbounds = parse_update(update)
        except Rejected:
            inbounds = []
        for inbound in inbounds:
            await answer_message(self.rt, config, state, inbound)
        await state.mark_handled(update_id)


def _chat_of(update: dict[str, Any]) -> Any:
    message = update.get("message")
    chat = message.get("chat") if isinstance(message, dict) else None
    return chat.get("id") if isinstance(chat, dict) else None
