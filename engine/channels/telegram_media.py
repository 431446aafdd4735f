"""Photos and documents sent to the bot, turned into what a model reads, or a polite refusal.

A photo goes to a model whose settings list `image` in `input`: Telegram sends each photo in
several sizes, the largest one under PHOTO_MAX_BYTES is fetched (getFile, then the file URL) and
given as an OpenAI `image_url` part holding a data: URL, with the caption as a text part (the
Anthropic and Ollama adapters translate that part to their own image shapes). A text document
(text/*, application/json, up to TEXT_FILE_MAX_BYTES, UTF-8) is given to any model as text under
its file name. Anything else gets `refusal()`, naming what is read: never silence.

The history keeps what a reader can follow, never the bytes: "[photo] <caption>" or
"[file name.txt] <caption>" (the file's text is given to the model once, not stored).

The bot token is a path segment of Telegram's file URL: no error raised here carries the URL.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from ..models.adapters.base import UpstreamError
from ..runtime import Runtime
from .base import ChannelConfig, Inbound
from .outbound import Outbound

PHOTO_MAX_BYTES = 5 * 1024 * 1024  # what the OpenAI and Anthropic APIs take per image, with room
TEXT_FILE_MAX_BYTES = 200 * 1024
TEXT_TYPES = ("application/json",)  # besides text/*
_DOWNLOAD_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Readable:
    """A media message as the model gets it (`content`) and as the history keeps it (`stored`)."""

    content: str | list[dict[str, Any]]
    stored: str


def refusal(images: bool) -> str:
    """The polite answer to a message the chat's model cannot be given."""
    kinds = "text messages, photos" if images else "text messages"
    return (
        f"Sorry, I cannot read that kind of message. I read {kinds} and text files "
        f"(plain text, Markdown, CSV, JSON) up to {TEXT_FILE_MAX_BYTES // 1024} KB."
    )


def attachment_of(message: dict[str, Any], media: str) -> dict[str, str]:
    """What `readable` needs of a photo or document message, as Inbound.extra: the file id (for a
    photo, of its largest size under the cap; none when every size is over it), name, type, size."""
    if media == "photo":
        sizes = [p for p in message.get("photo") or () if isinstance(p, dict) and isinstance(p.get("file_id"), str)]
        fitting = [p for p in sizes if _size(p) <= PHOTO_MAX_BYTES]
        if not fitting:
            return {}
        best = max(fitting, key=lambda p: (_size(p), _area(p)))
        return {"file_id": best["file_id"], "mime_type": "image/jpeg", "file_size": str(_size(best))}
    document = message.get("document")
    if media != "document" or not isinstance(document, dict) or not isinstance(document.get("file_id"), str):
        return {}
    return {
        "file_id": document["file_id"],
        "file_name": str(document.get("file_name") or "file")[:128],
        "mime_type": str(document.get("mime_type") or ""),
        "file_size": str(_size(document)),
    }


def _size(item: dict[str, Any]) -> int:
    size = item.get("file_size")
    return size if isinstance(size, int) and size >= 0 else 0


def _area(photo: dict[str, Any]) -> int:
    width, height = photo.get("width"), photo.get("height")
    return width * height if isinstance(width, int) and isinstance(height, int) else 0


def _is_text(mime_type: str) -> bool:
    return mime_type.startswith("text/") or mime_type in TEXT_TYPES


def for_model(inbound: Inbound, images: bool) -> bool:
    """Whether a media message is one a model with (or without) `images` may be given: if not, it
    gets `refusal` at once, and no file is fetched."""
    extra = inbound.extra
    if "file_id" not in extra:
        return False
    if inbound.media == "photo":
        return images
    return (
        inbound.media == "document" and _is_text(extra["mime_type"]) and int(extra["file_size"]) <= TEXT_FILE_MAX_BYTES
    )


async def readable(rt: Runtime, config: ChannelConfig, inbound: Inbound, images: bool) -> Readable | None:
    """The message as the model can read it, or None when it cannot (answer with `refusal`): not
    `for_model`, over the size cap (a size Telegram did not state) or a file that is not UTF-8.
    UpstreamError when Telegram does not hand the file over."""
    extra, caption = inbound.extra, inbound.text
    if not for_model(inbound, images):
        return None
    limit = PHOTO_MAX_BYTES if inbound.media == "photo" else TEXT_FILE_MAX_BYTES
    try:
        data = await download(rt, config, extra["file_id"], limit)
    except _TooLarge:
        return None
    if inbound.media == "photo":
        url = f"data:{extra['mime_type']};base64,{base64.b64encode(data).decode()}"
        parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}}]
        if caption:
            parts.insert(0, {"type": "text", "text": caption})
        return Readable(parts, f"[photo] {caption}".rstrip())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    name = extra["file_name"]
    content = f"{caption}\n\nThe file {name}:\n{text}" if caption else f"The file {name}:\n{text}"
    return Readable(content, f"[file {name}] {caption}".rstrip())


class _TooLarge(UpstreamError):
    pass


async def download(rt: Runtime, config: ChannelConfig, file_id: str, limit: int) -> bytes:
    """A file's bytes by getFile and the file URL; _TooLarge past `limit` bytes (read no further)."""
    token = config.secrets["bot_token"]
    answer = await Outbound(rt.clients, config.api_base).call("POST", f"/bot{token}/getFile", body={"file_id": file_id})
    path = (answer.get("result") or {}).get("file_path") if answer.get("ok") is True else None
    if not isinstance(path, str) or not path:
        raise UpstreamError(f"getFile refused: {str(answer.get('description'))[:200]}", retryable=False)
    client = rt.clients.get(config.api_base, 5.0, _DOWNLOAD_SECONDS)
    chunks, size = [], 0
    try:
        async with client.session.get(URL(f"{client.base_url}/file/bot{token}/{path}", encoded=False)) as r:
            if r.status >= 400:
                raise UpstreamError(f"file download answered HTTP {r.status}", retryable=r.status >= 500)
            async for chunk in r.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise _TooLarge(f"file over {limit} bytes", retryable=False)
                chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"file download failed ({type(exc).__name__})", retryable=True) from None
    return b"".join(chunks)
