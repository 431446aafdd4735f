"""Chat platforms that reach the assistant through webhooks: one module per platform.

Adding a platform is adding a module with a `WebhookChannel` class (see base.py) and a line in
`CHANNELS`; the settings name it in `ChannelSettings.name`. Each enabled channel gets one route at
its `path` (POST for updates, GET too when the platform verifies the URL with a handshake), all
served by `endpoint`, which:

1. refuses anything unauthentic or malformed with a 4xx and one log line, before anything else;
2. answers a GET handshake (WhatsApp's hub.challenge, WeCom's echostr);
3. hands each text message to `delivery.Deliveries` and acknowledges with 200 at once; the reply
   follows through the platform's send API. A photo, voice note or file gets a polite "text
   only" reply (delivery.MEDIA_TEXT); other non-text updates are acknowledged and dropped.
   Telegram's messages go through telegram_answer.py (its /start, /reset, /model commands and the
   "typing..." indicator), which hands the rest to the same delivery machinery. Telegram in
   polling mode has no route: a TelegramPoller asks Telegram for updates (telegram_poll.py).

The routes depend on the settings, so they are not in the OpenAPI document (like /ws).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response

from .. import logs
from ..errors import ApiError, error_response
from ..middleware import request_id
from ..pipeline import runtime
from ..runtime import Runtime
from ..settings import EngineSettings
from .base import ChannelConfig, Inbound, WebhookChannel, body_limit, channel_config, missing
from .delivery import Deliveries
from .telegram import Telegram
from .telegram_answer import accept_webhook, answer_message
from .telegram_poll import TelegramPoller, polling
from .telegram_state import PostgresTelegramState, State, TelegramState
from .wecom import WeCom
from .whatsapp import WhatsApp

CHANNELS: dict[str, type[WebhookChannel]] = {c.name: c for c in (Telegram, WeCom, WhatsApp)}


class Webhooks:
    """The webhook channels the settings enable, by path, and the replies still being sent."""

    def __init__(self, settings: EngineSettings, secrets: dict[str, str]) -> None:
        self.by_path: dict[str, WebhookChannel] = {}
        self.polls = False  # telegram in polling mode: a TelegramPoller starts with the worker
        self.poller: TelegramPoller | None = None
        for entry in settings.channels:
            kind = CHANNELS.get(entry.name)
            if kind is None:
                continue
            if polling(entry):  # no route: the engine asks Telegram for updates (telegram_poll.py)
                if not secrets.get(entry.secrets.get("bot_token", "")):
                    raise RuntimeError("channel 'telegram' lacks secret bot_token")
                self.polls = True
                continue
            channel = kind()
            lacking = missing(channel, entry, secrets)
            if lacking:  # fail at start, like a JWT secret missing from the secrets file
                raise RuntimeError(f"channel {entry.name!r} lacks {', '.join(lacking)}")
            self.by_path[entry.path or channel.default_path] = channel
        self.deliveries = Deliveries()
        self._telegram_state: State | None = None  # opened by the first Telegram update
        self._telegram_tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> dict[str, tuple[str, ...]]:
        """path -> HTTP methods, for the app's route table."""
        return {path: channel.methods for path, channel in self.by_path.items()}

    def start(self, rt: Runtime) -> None:
        """Start what runs beside the routes (the Telegram poller), once the runtime is up."""
        if self.polls:
            self.poller = TelegramPoller(rt)
            self.poller.start()

    async def accept_telegram(self, request: Request, rt: Runtime, config: ChannelConfig, inbound: Inbound) -> None:
        """A webhook update: claimed now, answered after the 200 (telegram_answer.py)."""
        request.state.user = f"{Telegram.name}:{inbound.user_id}"
        if self._telegram_state is None:
            # /reset and /model hold for the chat on every node when the history is shared.
            if rt.settings.history_backend == "postgres":
                self._telegram_state = PostgresTelegramState(rt.history.pool)
            else:
                self._telegram_state = await TelegramState.open(rt.settings.data_dir)
        state = self._telegram_state
        message_id = await accept_webhook(rt, config, state, inbound)
        if message_id is not None:
            task = asyncio.create_task(answer_message(rt, config, state, inbound, message_id))
            self._telegram_tasks.add(task)
            task.add_done_callback(self._telegram_tasks.discard)

    async def close(self, grace: float) -> None:
        if self.poller is not None:
            await self.poller.close()
        if self._telegram_tasks:
            _, pending = await asyncio.wait(set(self._telegram_tasks), timeout=grace)
            for task in pending:  # Answer releases its claim when cancelled: Telegram redelivers
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.deliveries.close(grace)
        if self._telegram_state is not None:
            await self._telegram_state.close()


async def endpoint(request: Request) -> Response:
    webhooks: Webhooks = request.app.state.webhooks
    channel = webhooks.by_path[request.scope["path"]]
    rt = runtime(request)
    try:
        config = channel_config(rt, channel)
        if request.method in ("GET", "HEAD"):  # Starlette answers HEAD wherever GET is routed
            return await channel.handshake(request, config)
        messages = await channel.receive(request, config, body_limit(rt.settings.max_message_chars))
    except ApiError as exc:
        logs.event(
            logs.APP,
            logging.WARNING,
            f"webhook refused: {exc.message}",
            request_id=request_id(request.scope),
            channel=channel.name,
            status=exc.status,
        )
        return error_response(exc.status, exc.code, exc.message)
    for message in messages:
        if channel.name == Telegram.name:  # its commands, chosen models and typing: telegram_answer.py
            await webhooks.accept_telegram(request, rt, config, message)
        else:
            await webhooks.deliveries.accept(request, rt, channel, config, message)
    return Response(status_code=200)
