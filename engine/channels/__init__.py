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

The routes depend on the settings, so they are not in the OpenAPI document (like /ws).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from .. import logs
from ..errors import ApiError, error_response
from ..middleware import request_id
from ..pipeline import runtime
from ..settings import EngineSettings
from .base import WebhookChannel, body_limit, channel_config, missing
from .delivery import Deliveries
from .telegram import Telegram
from .wecom import WeCom
from .whatsapp import WhatsApp

CHANNELS: dict[str, type[WebhookChannel]] = {c.name: c for c in (Telegram, WeCom, WhatsApp)}


class Webhooks:
    """The webhook channels the settings enable, by path, and the replies still being sent."""

    def __init__(self, settings: EngineSettings, secrets: dict[str, str]) -> None:
        self.by_path: dict[str, WebhookChannel] = {}
        for entry in settings.channels:
            kind = CHANNELS.get(entry.name)
            if kind is None:
                continue
            channel = kind()
            lacking = missing(channel, entry, secrets)
            if lacking:  # fail at start, like a JWT secret missing from the secrets file
                raise RuntimeError(f"channel {entry.name!r} lacks {', '.join(lacking)}")
            self.by_path[entry.path or channel.default_path] = channel
        self.deliveries = Deliveries()

    def routes(self) -> dict[str, tuple[str, ...]]:
        """path -> HTTP methods, for the app's route table."""
        return {path: channel.methods for path, channel in self.by_path.items()}

    async def close(self, grace: float) -> None:
        await self.deliveries.close(grace)


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
        await webhooks.deliveries.accept(request, rt, channel, config, message)
    return Response(status_code=200)
