"""WhatsApp Cloud API webhooks.

Verification: Meta calls GET with `hub.mode=subscribe`, `hub.verify_token` (compared in constant
time with the configured verify token) and `hub.challenge`, which is echoed back. Authenticity:
each POST carries `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the
app secret>`. Text messages sit at `entry[].changes[].value.messages[]` with `type: text`, `id`
(the de-duplication key), `from` and `text.body`; only those addressed to our phone number id
(`value.metadata.phone_number_id`) are answered. Media (image, audio and voice notes, video,
document, sticker, location, contacts, and what the Cloud API itself calls `unsupported`) become
`Inbound.media`, answered with a polite "text only"; reactions and system notices get nothing.
Replies: POST `<api_base>/<phone_number_id>/messages` with the access token as a Bearer token; a
text body is at most 4096 characters. A screenshot (delivery.py) is uploaded first (POST
`<phone_number_id>/media`, multipart, at most 5 MB), then sent as an `image` message naming its id.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..models.adapters.base import UpstreamError
from .base import ChannelConfig, Inbound, Rejected, json_object, read_body, same
from .outbound import File, Outbound

SIGNATURE_HEADER = "x-hub-signature-256"
_PREFIX = "sha256="
_MAX_CHALLENGE = 256
# Message types a user sends that the assistant cannot read yet: answered, never met with silence.
MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker", "location", "contacts", "unsupported"})


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def _inbound(message: dict[str, Any]) -> Inbound | None:
    """A text or media message from a user; None for reactions, system notices and malformed ones."""
    sender, message_id, kind = message.get("from"), message.get("id"), message.get("type")
    if not isinstance(sender, str) or not sender or not isinstance(message_id, str) or not message_id:
        return None
    if kind in MEDIA_TYPES:
        return Inbound(update_id=message_id, user_id=sender, chat_id=sender, text="", media=kind)
    text = message.get("text")
    body = text.get("body") if isinstance(text, dict) else None
    if kind != "text" or not isinstance(body, str):
        return None
    return Inbound(update_id=message_id, user_id=sender, chat_id=sender, text=body)


class WhatsApp:
    name: ClassVar[str] = "whatsapp"
    default_path: ClassVar[str] = "/webhooks/whatsapp"
    default_api_base: ClassVar[str] = "https://graph.facebook.com/v21.0"
    required_secrets: ClassVar[tuple[str, ...]] = ("access_token", "verify_token", "app_secret")
    required_options: ClassVar[tuple[str, ...]] = ("phone_number_id",)
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")
    max_reply: ClassVar[int] = 4096

    def reply_size(self, text: str) -> int:
        return len(text)

    async def handshake(self, request: Request, config: ChannelConfig) -> Response:
        query = request.query_params
        mode, token, challenge = query.get("hub.mode"), query.get("hub.verify_token"), query.get("hub.challenge")
        if not mode or token is None or not challenge or len(challenge) > _MAX_CHALLENGE:
            raise Rejected(400, "verification lacks hub.mode, hub.verify_token or hub.challenge")
        if mode != "subscribe" or not same(token, config.secrets["verify_token"]):
            raise Rejected(403, "wrong hub.mode or hub.verify_token")
        return PlainTextResponse(challenge)

    async def receive(self, request: Request, config: ChannelConfig, max_bytes: int) -> list[Inbound]:
        given = request.headers.get(SIGNATURE_HEADER)
        if given is None:
            raise Rejected(401, "missing X-Hub-Signature-256 header")
        if not given.startswith(_PREFIX):
            raise Rejected(401, "X-Hub-Signature-256 is not sha256=<hex>")
        raw = await read_body(request, max_bytes)
        expected = hmac.new(config.secrets["app_secret"].encode(), raw, hashlib.sha256).hexdigest()
        if not same(given[len(_PREFIX) :].strip().lower(), expected):
            raise Rejected(401, "wrong X-Hub-Signature-256")
        payload = json_object(raw)
        if not isinstance(payload.get("entry"), list):
            raise Rejected(400, "entry is missing or not a list")
        return list(self._messages(payload, config.option("phone_number_id")))

    def _messages(self, payload: dict[str, Any], phone_number_id: str | None) -> Iterator[Inbound]:
        for entry in _dicts(payload["entry"]):
            for change in _dicts(entry.get("changes")):
                value = change.get("value")
                if not isinstance(value, dict):
                    continue
                metadata = value.get("metadata")
                to = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
                if phone_number_id and to != phone_number_id:
                    continue  # another number of the same app: not ours to answer
                for message in _dicts(value.get("messages")):  # statuses and the like carry none
                    inbound = _inbound(message)
                    if inbound is not None:
                        yield inbound

    async def send(self, outbound: Outbound, config: ChannelConfig, to: Inbound, text: str) -> None:
        await _message(outbound, config, to, {"type": "text", "text": {"preview_url": False, "body": text}})

    async def send_photo(self, outbound: Outbound, config: ChannelConfig, to: Inbound, name: str, png: bytes) -> None:
        """Upload a PNG, then send it to the chat as an image; UpstreamError when either is refused."""
        headers = {"Authorization": f"Bearer {config.secrets['access_token']}"}
        fields = {"messaging_product": "whatsapp", "type": "image/png"}
        path = f"/{config.option('phone_number_id')}/media"
        uploaded = await outbound.upload(path, fields, File("file", name, "image/png", png), headers=headers)
        media_id = uploaded.get("id")
        if not isinstance(media_id, str) or not media_id:
            raise UpstreamError("media upload answered no id", retryable=False)
        await _message(outbound, config, to, {"type": "image", "image": {"id": media_id}})


async def _message(outbound: Outbound, config: ChannelConfig, to: Inbound, content: dict[str, Any]) -> None:
    body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to.chat_id, **content}
    headers = {"Authorization": f"Bearer {config.secrets['access_token']}"}
    await outbound.call("POST", f"/{config.option('phone_number_id')}/messages", body=body, headers=headers)
