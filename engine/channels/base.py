"""What every webhook channel shares: the inbound message, the refusal, the per-request config.

A channel module turns a platform's HTTP request into `Inbound` messages (after checking the
request really comes from the platform) and sends a reply text back through the platform's API.
Everything in between (who may ask, de-duplication, rate limit, the model call, history) is the
same for every channel and lives in `delivery.py`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import ApiError
from ..jsonio import RefusedJson, loads
from ..runtime import Runtime
from ..settings import ChannelSettings
from .outbound import Outbound

# Bodies are read whole before a signature can be checked, so they are capped well below what a
# chat body may be: a text message is at most max_message_chars, in JSON escapes or base64.
_MIN_BODY_BYTES = 256 * 1024


_CODES = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "body_timeout",
    413: "too_large",
}


class Rejected(ApiError):
    """A request the channel refuses (4xx): nothing else happens, one log line says why.

    The reason must never contain a secret or a value derived from one."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, _CODES.get(status, "refused"), reason)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a platform user, already authenticated: text, or a `media` kind."""

    update_id: str  # the platform's id of this delivery: a redelivery carries the same one
    user_id: str  # the platform's id of the sender; the engine's user is `<channel>:<user_id>`
    chat_id: str  # where the reply goes
    text: str
    aliases: tuple[str, ...] = ()  # other names allowed_users may use for the sender (a username)
    extra: dict[str, str] = field(default_factory=dict)  # what the channel's send needs besides chat_id
    # A message the assistant cannot read yet (photo, voice, file...): its kind, and `text` is "".
    # It gets delivery.MEDIA_TEXT as its answer, never silence, and no model call.
    media: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """A channel's settings with its secrets resolved, read per request so a reload applies."""

    settings: ChannelSettings
    secrets: dict[str, str]  # purpose (bot_token, app_secret ...) -> value
    api_base: str

    def option(self, name: str) -> str | None:
        value = self.settings.options.get(name)
        return None if value is None else str(value)


class WebhookChannel(Protocol):
    """A platform. Each module in this package defines one class like this and the registry lists it."""

    name: ClassVar[str]
    default_path: ClassVar[str]
    default_api_base: ClassVar[str]
    required_secrets: ClassVar[tuple[str, ...]]  # purposes that must be in the secrets file
    required_options: ClassVar[tuple[str, ...]]  # ChannelSettings.options the channel cannot work without
    methods: ClassVar[tuple[str, ...]]  # GET when the platform verifies the URL with a handshake
    max_reply: ClassVar[int]  # one outbound message's size limit, in `reply_size` units

    def reply_size(self, text: str) -> int: ...

    async def handshake(self, request: Request, config: ChannelConfig) -> Response:
        """Answer the platform's GET verification, or raise Rejected."""
        ...

    async def receive(self, request: Request, config: ChannelConfig, max_bytes: int) -> list[Inbound]:
        """Verify the request, then parse it; raise Rejected for anything unsigned or malformed.
        Updates that carry no message from a user (edits, statuses, service messages) give an
        empty list (acknowledged, never answered); a user's media gives an Inbound with `media`."""
        ...

    async def send(self, outbound: Outbound, config: ChannelConfig, to: Inbound, text: str) -> None:
        """Send one reply message (already within `max_reply`); raise UpstreamError on failure."""
        ...


def channel_config(rt: Runtime, channel: WebhookChannel) -> ChannelConfig:
    settings = next((c for c in rt.settings.channels if c.name == channel.name), None)
    if settings is None:
        raise Rejected(404, f"the {channel.name} channel is not enabled")
    values = {}
    for purpose in channel.required_secrets:
        value = rt.secrets.get(settings.secrets.get(purpose, ""))
        if not value:
            raise ApiError(503, "unavailable", f"{channel.name} secret {purpose!r} is not in the secrets file")
        values[purpose] = value
    for purpose, name in settings.secrets.items():  # optional ones (WeCom's secret) when present
        if purpose not in values and rt.secrets.get(name):
            values[purpose] = rt.secrets[name]
    return ChannelConfig(settings, values, (settings.api_base or channel.default_api_base).rstrip("/"))


def missing(channel: WebhookChannel, settings: ChannelSettings, secrets: dict[str, str]) -> list[str]:
    """The secrets and options `channel` needs that the settings and secrets file do not give."""
    lacking = [f"secret {p}" for p in channel.required_secrets if not secrets.get(settings.secrets.get(p, ""))]
    return lacking + [f"option {o}" for o in channel.required_options if settings.options.get(o) in (None, "")]


def body_limit(max_message_chars: int) -> int:
    return max(_MIN_BODY_BYTES, max_message_chars * 8 + 16 * 1024)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body (signatures are over the exact bytes), refused past `max_bytes`."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise Rejected(400, "invalid Content-Length") from None
    if declared > max_bytes:
        raise Rejected(413, f"body over {max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise Rejected(413, f"body over {max_bytes} bytes")
    except ClientDisconnect:  # gone, or cut off by the body timeout (engine/http_protocol.py)
        raise Rejected(408, "the body did not arrive in time") from None
    return bytes(body)


def json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or Rejected(400): invalid JSON, nested too deep, text with a
    lone surrogate (jsonio refuses those two) or not an object."""
    try:
        data = loads(raw)
    except RefusedJson as exc:
        raise Rejected(400, f"body refused: {exc}") from None
    except ValueError:  # UnicodeDecodeError is one
        raise Rejected(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Rejected(400, "body is not a JSON object")
    return data


def same(given: str | bytes, expected: str | bytes) -> bool:
    """Constant-time equality, so response timing says nothing about how much of a secret matched."""
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def split_reply(text: str, limit: int, size: Any = len) -> list[str]:
    """`text` in pieces of at most `limit` units of `size`, cut at character boundaries."""
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:
        n = size(char)
        if used + n > limit and current:
            parts.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += n
    if current:
        parts.append("".join(current))
    return parts
