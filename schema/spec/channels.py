"""`channels:` where users reach the assistant."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, HttpUrl, model_validator

from ...engine.settings import CORS_ORIGIN_PATTERN, CorsOrigin
from ..types import Name, PositiveSeconds, SecretRef, UrlPath
from .base import Strict


def _origin(value: object) -> object:
    """The pattern's refusal in words (the published schema keeps the pattern itself)."""
    if isinstance(value, str) and not re.fullmatch(CORS_ORIGIN_PATTERN, value):
        raise ValueError(
            "not an origin as browsers send it: scheme://host[:port], host in lower case, "
            "no path, no trailing slash (e.g. https://app.example.com), or '*' alone"
        )
    return value


Origin = Annotated[CorsOrigin, BeforeValidator(_origin)]


class Channel(Strict):
    enabled: bool = Field(False, description="Serve this channel.")
    model: Name | None = Field(None, description="Model for this channel; the default when unset.")


class WebChannel(Channel):
    enabled: bool = Field(True, description="Serve the HTTP chat API (/api/v1/chat, /v1/chat/completions).")
    cors_origins: list[Origin] = Field(
        default_factory=list,
        description="Browser origins whose pages may call the API from other sites, exactly as a browser "
        "sends them: `https://app.example.com`, `http://localhost:3000` (scheme, lower-case host, port; no "
        "path, no trailing slash). `*` alone allows any site. Never with cookies: pages send the API key in "
        "the Authorization header. The engine answers CORS, behind nginx or not (the same answer).",
    )

    @model_validator(mode="after")
    def _wildcard_alone(self) -> WebChannel:
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise ValueError("cors_origins: '*' already allows every origin; list it alone")
        return self


class WebSocketChannel(Channel):
    enabled: bool = Field(True, description="Serve chat over a WebSocket at `path`.")
    path: UrlPath = Field("/ws", description="URL path of the WebSocket endpoint.")
    heartbeat_seconds: PositiveSeconds = Field(
        30, description="Seconds between pings; nginx drops a connection silent for three of them."
    )


class TelegramChannel(Channel):
    bot_token: SecretRef | None = Field(None, description="The bot's token from @BotFather; required when enabled.")
    webhook_secret: SecretRef | None = Field(
        None,
        description="Checked against Telegram's secret-token header on every update; required in webhook mode.",
    )
    mode: Literal["webhook", "polling"] = Field(
        "webhook",
        description="webhook: Telegram posts updates to public_url (apply registers it with setWebhook); "
        "polling: the engine asks Telegram for updates (getUpdates), for hosts Telegram cannot reach.",
    )
    public_url: HttpUrl | None = Field(
        None,
        description="The HTTPS URL Telegram posts updates to (webhook mode); unset: "
        "https://<deploy.server_name>[:<ports.https>]<path>, when security.tls is on.",
    )
    api_base: HttpUrl | None = Field(None, description="The Bot API's base URL; unset: https://api.telegram.org.")
    path: UrlPath = Field("/webhooks/telegram", description="URL path Telegram posts updates to.")
    allowed_users: list[str] = Field(
        default_factory=list, description="Telegram user ids or usernames who may chat; empty: everyone."
    )


class WeComChannel(Channel):
    corp_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9]+$", description="The WeCom corporation id; required when enabled."
    )
    agent_id: int | None = Field(None, description="The app's AgentId, used to send replies; unset: the message's own.")
    token: SecretRef | None = Field(None, description="The callback Token that signs requests; required when enabled.")
    encoding_aes_key: SecretRef | None = Field(
        None, description="The callback EncodingAESKey that encrypts messages; required when enabled."
    )
    secret: SecretRef | None = Field(None, description="The app Secret, needed to send replies.")
    path: UrlPath = Field("/webhooks/wecom", description="URL path WeCom calls back.")


class WhatsAppChannel(Channel):
    phone_number_id: str | None = Field(
        None, pattern=r"^[0-9]+$", description="The WhatsApp Business phone number id (digits, quoted); required."
    )
    access_token: SecretRef | None = Field(
        None, description="Graph API token used to send replies; required when enabled."
    )
    verify_token: SecretRef | None = Field(
        None, description="Echoed in Meta's webhook verification handshake; required when enabled."
    )
    app_secret: SecretRef | None = Field(
        None, description="Checks the X-Hub-Signature-256 of every delivery; required when enabled."
    )
    path: UrlPath = Field("/webhooks/whatsapp", description="URL path Meta posts deliveries to.")


class Channels(Strict):
    web: WebChannel = Field(WebChannel(), description="HTTP chat API; on by default.")
    websocket: WebSocketChannel = Field(WebSocketChannel(), description="WebSocket chat; on by default.")
    telegram: TelegramChannel = Field(TelegramChannel(), description="A Telegram bot, by webhook; off by default.")
    wecom: WeComChannel = Field(WeComChannel(), description="A WeCom (WeChat Work) app; off by default.")
    whatsapp: WhatsAppChannel = Field(WhatsAppChannel(), description="WhatsApp Business Cloud API; off by default.")

    @model_validator(mode="after")
    def _enabled_channels_have_credentials(self) -> Channels:
        needs = {
            "telegram": ("bot_token", *(("webhook_secret",) if self.telegram.mode == "webhook" else ())),
            "wecom": ("corp_id", "token", "encoding_aes_key"),
            "whatsapp": ("phone_number_id", "access_token", "verify_token", "app_secret"),
        }
        for name, fields in needs.items():
            channel = getattr(self, name)
            missing = [f for f in fields if channel.enabled and getattr(channel, f) is None]
            if missing:
                raise ValueError(f"channel '{name}' is enabled but lacks: {', '.join(missing)}")
        return self
