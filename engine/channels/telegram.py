"""Telegram Bot API webhooks.

Authenticity: the webhook is registered with setWebhook(secret_token=...), and Telegram sends that
token in `X-Telegram-Bot-Api-Secret-Token` with every update; it is checked (in constant time)
before the body is even read. An Update is JSON: `update_id` (the de-duplication key) and, for a
text message, `message.text`, `message.from.id`, `message.chat.id`. Replies: POST
`<api_base>/bot<token>/sendMessage` with `chat_id` and `text` (at most 4096 characters); a
screenshot (delivery.py) goes after it by `sendPhoto`, multipart with the PNG as `photo`.
A photo, voice note, audio, document, video, sticker or animation becomes `Inbound.media`, its
caption the text and, for a photo or a document, the file in `Inbound.extra` (telegram_media.py
decides what a model is given and what gets a polite refusal); service messages get nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response

from ..models.adapters.base import UpstreamError
from ..settings import TELEGRAM_ALLOWED_UPDATES
from .base import ChannelConfig, Inbound, Rejected, json_object, read_body, same
from .outbound import File, Outbound
from .telegram_media import attachment_of

SECRET_HEADER = "x-telegram-bot-api-secret-token"
ALLOWED_UPDATES = TELEGRAM_ALLOWED_UPDATES  # what setWebhook and getUpdates ask Telegram for
# Message fields of content the assistant cannot read yet, in the Bot API's names.
MEDIA_FIELDS = ("photo", "voice", "audio", "document", "video", "video_note", "sticker", "animation")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Telegram:
    name: ClassVar[str] = "telegram"
    default_path: ClassVar[str] = "/webhooks/telegram"
    default_api_base: ClassVar[str] = "https://api.telegram.org"
    required_secrets: ClassVar[tuple[str, ...]] = ("bot_token", "webhook_secret")
    required_options: ClassVar[tuple[str, ...]] = ()
    methods: ClassVar[tuple[str, ...]] = ("POST",)
    max_reply: ClassVar[int] = 4096

    def reply_size(self, text: str) -> int:
        return len(text)

    async def handshake(self, request: Request, config: ChannelConfig) -> Response:
        raise Rejected(405, "telegram has no GET handshake")

    async def receive(self, request: Request, config: ChannelConfig, max_bytes: int) -> list[Inbound]:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            raise Rejected(401, "missing X-Telegram-Bot-Api-Secret-Token header")
        if not same(given, config.secrets["webhook_secret"]):
            raise Rejected(401, "wrong X-Telegram-Bot-Api-Secret-Token")
        update = json_object(await read_body(request, max_bytes))
        return parse_update(update)

    async def send(self, outbound: Outbound, config: ChannelConfig, to: Inbound, text: str) -> None:
        await bot_call(outbound, config, "sendMessage", {"chat_id": int(to.chat_id), "text": text})

    async def send_photo(self, outbound: Outbound, config: ChannelConfig, to: Inbound, name: str, png: bytes) -> None:
        """Send a PNG to the chat; UpstreamError when refused (Telegram takes a photo of at most
        10 MB whose width and height add up to at most 10000 px)."""
        path = f"/bot{config.secrets['bot_token']}/sendPhoto"
        answer = await outbound.upload(path, {"chat_id": to.chat_id}, File("photo", name, "image/png", png))
        if answer.get("ok") is not True:
            raise UpstreamError(f"sendPhoto refused: {str(answer.get('description'))[:200]}", retryable=False)


async def bot_call(outbound: Outbound, config: ChannelConfig, method: str, body: dict[str, Any]) -> Any:
    """The `result` of one Bot API method; UpstreamError when refused. The token is a path segment
    of the URL, and Outbound never puts the URL in an error, so no error here carries it."""
    answer = await outbound.call("POST", f"/bot{config.secrets['bot_token']}/{method}", body=body)
    if answer.get("ok") is not True:
        raise UpstreamError(f"{method} refused: {str(answer.get('description'))[:200]}", retryable=False)
    return answer.get("result")


def parse_update(update: dict[str, Any]) -> list[Inbound]:
    """The user message an Update carries (webhook body or one getUpdates item), or [] for updates
    with nothing to answer; Rejected(400) when it has no integer update_id."""
    update_id = update.get("update_id")
    if not _int(update_id):
        raise Rejected(400, "update_id is missing or not an integer")
    message = update.get("message")  # edits, channel posts, callbacks...: nothing to answer
    if not isinstance(message, dict):
        return []
    text, sender, chat = message.get("text"), message.get("from"), message.get("chat")
    media = next((kind for kind in MEDIA_FIELDS if kind in message), None) if text is None else None
    if not isinstance(text, str) and media is None:
        return []  # service messages, polls, dice...
    if not isinstance(sender, dict) or not isinstance(chat, dict):
        return []
    if sender.get("is_bot") or not _int(sender.get("id")) or not _int(chat.get("id")):
        return []
    username = sender.get("username")
    caption = message.get("caption")
    if media is not None:  # the caption is the text; the file is fetched only if a model is given it
        text = caption if isinstance(caption, str) else ""
    return [
        Inbound(
            update_id=str(update_id),
            user_id=str(sender["id"]),
            chat_id=str(chat["id"]),
            text=text,
            aliases=(username,) if isinstance(username, str) and username else (),
            extra=attachment_of(message, media) if media is not None else {},
            media=media,
        )
    ]
