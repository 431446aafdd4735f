"""Telegram by long polling (`channels.telegram.mode: polling`), for hosts Telegram cannot reach.

One poller per node: every worker starts one, and only the worker holding an exclusive lock on
`<data_dir>/telegram-poll.lock` polls (the others retry the lock every few seconds, so one takes
over when the holder dies; the kernel drops a dead process's lock, even after SIGKILL).

Neither lost nor answered twice across a crash: getUpdates is asked from the offset stored in
telegram_state (Telegram re-sends every update at or above it), each update is recorded as handled
once its reply is out, and the stored offset moves past a batch only when all of it is handled. A
restart therefore gets the unfinished batch again and answers only what was not answered. The one
window left is a crash between a reply reaching Telegram and its row being written.

A batch is answered concurrently and the next getUpdates waits for the whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, TextIO

from .. import logs
from ..models.adapters.base import UpstreamError
from ..runtime import Runtime
from ..settings import ChannelSettings
from .base import ChannelConfig, Rejected
from .delivery import _redacted
from .outbound import Outbound
from .telegram import ALLOWED_UPDATES, Telegram, bot_call, parse_update
from .telegram_answer import answer_message
from .telegram_state import TelegramState

POLL_SECONDS = 25  # getUpdates' long-poll timeout: below Outbound's 30 s read timeout
_LOCK_RETRY_SECONDS = 5.0
_ERROR_BACKOFF_SECONDS = 3.0


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
        self._state: TelegramState | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telegram-poller")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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

    async def _run(self) -> None:
        while True:
            settings = self._settings()
            if settings is None or not self._locked():  # polling switched off by a reload, or another worker polls
                await asyncio.sleep(_LOCK_RETRY_SECONDS)
                continue
            config = config_of(self.rt, settings)
            try:
                if self._state is None:
                    self._state = await TelegramState.open(self.rt.settings.data_dir)
                await self._once(config, self._state)
            except asyncio.CancelledError:
                raise
            except UpstreamError as exc:
                message = _redacted(str(exc), config)
                logs.event(logs.APP, logging.WARNING, f"telegram getUpdates failed: {message}", channel="telegram")
                await asyncio.sleep(_ERROR_BACKOFF_SECONDS)
            except Exception:  # noqa: BLE001 - a bug is logged and polling goes on
                logs.APP.exception("telegram poller failed", extra={"fields": {"channel": "telegram"}})
                await asyncio.sleep(_ERROR_BACKOFF_SECONDS)

    async def _once(self, config: ChannelConfig, state: TelegramState) -> None:
        outbound = Outbound(self.rt.clients, config.api_base)
        body = {"offset": await state.offset(), "timeout": POLL_SECONDS, "allowed_updates": list(ALLOWED_UPDATES)}
        updates = await bot_call(outbound, config, "getUpdates", body)
        batch = [u for u in updates or () if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
        if not batch:
            return
        await asyncio.gather(*(self._handle(config, state, update) for update in batch))
        await state.advance(max(u["update_id"] for u in batch) + 1)

    async def _handle(self, config: ChannelConfig, state: TelegramState, update: dict[str, Any]) -> None:
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
