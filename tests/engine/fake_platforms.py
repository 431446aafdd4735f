"""A fake of the chat platforms' send APIs (Telegram, WhatsApp Cloud, WeCom) run in a thread on loopback.

It records every reply the engine sends (`sent`: channel, path, query, headers, body) and every
WeCom access token it hands out, so tests can count replies and check what they carried.

Telegram's Bot API beyond sendMessage (`bot`, a FakeBot): getUpdates with Telegram's offset and
long-poll timeout semantics over the updates a test queues (`bot.queue`), refused with 409 while
a webhook is set, as Telegram does; setWebhook / getWebhookInfo / deleteWebhook; sendChatAction;
getFile and the file download. Every Bot API call is in `bot.calls` (method, path, body).

Photos the engine sends (Telegram's multipart sendPhoto; WhatsApp's multipart media upload, whose
id an `image` message then names) are in `photos`: channel, chat, filename, content type, bytes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fake_models import free_port, serve_in_thread

WECOM_ACCESS_TOKEN = "FAKE-WECOM-ACCESS-TOKEN"


@dataclass
class FakeBot:
    """The Bot API's state: queued updates (Telegram keeps each until a getUpdates offset passes
    it), the webhook registration, chat actions and files."""

    queue: list[dict[str, Any]] = field(default_factory=list)
    webhook: dict[str, Any] = field(default_factory=dict)  # url, secret_token, allowed_updates
    calls: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # file_id -> content
    lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, *updates: dict[str, Any]) -> None:
        with self.lock:
            self.queue.extend(updates)

    def of(self, method: str) -> list[dict[str, Any]]:
        return [call for call in list(self.calls) if call["method"] == method]

    def reset(self) -> None:
        with self.lock:
            self.queue.clear()
        self.webhook.clear()
        self.calls.clear()
        self.files.clear()

    def take(self, offset: int | None, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            if offset is not None:  # Telegram forgets every update below the offset asked from
                self.queue[:] = [u for u in self.queue if u["update_id"] >= offset]
            return list(self.queue[:limit])


@dataclass
class FakePlatforms:
    port: int
    sent: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: list[dict[str, str]] = field(default_factory=list)
    bot: FakeBot = field(default_factory=FakeBot)
    photos: list[dict[str, Any]] = field(default_factory=list)
    whatsapp_media: dict[str, dict[str, Any]] = field(default_factory=dict)  # media id -> upload

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, channel: str) -> list[dict[str, Any]]:
        return [call for call in self.sent if call["channel"] == channel]

    def wait_for(self, channel: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The channel's recorded replies once there are `count` of them; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while len(self.of(channel)) < count:
            assert time.monotonic() < deadline, f"{channel}: {len(self.of(channel))} replies, wanted {count}"
            time.sleep(0.02)
        return self.of(channel)

    def reset(self) -> None:
        self.sent.clear()
        self.tokens_issued.clear()
        self.bot.reset()
        self.photos.clear()
        self.whatsapp_media.clear()


def _routes(fake: FakePlatforms) -> list[Route]:
    async def record(channel: str, request: Request) -> None:
        fake.sent.append(
            {
                "channel": channel,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "body": await request.json(),
            }
        )

    async def telegram_send(request: Request) -> Response:
        if not request.path_params["bot"].startswith("bot"):
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404)
        await record("telegram", request)
        return JSONResponse({"ok": True, "result": {"message_id": len(fake.sent)}})

    async def upload(request: Request, field_name: str) -> dict[str, Any] | None:
        """The multipart form's fields, the file of `field_name` as `data` (None: no such file)."""
        form = await request.form()
        file = form.get(field_name)
        if file is None or isinstance(file, str):
            return None
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return {**fields, "filename": file.filename, "content_type": file.content_type, "data": await file.read()}

    async def telegram_photo(request: Request) -> Response:
        sent = await upload(request, "photo")
        fake.bot.calls.append({"method": "sendPhoto", "path": request.url.path, "body": sent})
        if sent is None or not sent.get("chat_id"):
            return JSONResponse({"ok": False, "error_code": 400, "description": "Bad Request: no photo"}, 400)
        fake.photos.append({"channel": "telegram", "chat": sent["chat_id"], **sent})
        return JSONResponse({"ok": True, "result": {"message_id": len(fake.bot.calls)}})

    async def telegram_method(request: Request) -> Response:
        bot, method = fake.bot, request.path_params["method"]
        if not request.path_params["bot"].startswith("bot"):
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404)
        if method == "sendPhoto":
            return await telegram_photo(request)
        raw = await request.body()
        body = json.loads(raw) if raw else dict(request.query_params)
        bot.calls.append({"method": method, "path": request.url.path, "body": body})
        if method == "getUpdates":
            if bot.webhook.get("url"):
                conflict = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook"
                return JSONResponse({"ok": False, "error_code": 409, "description": conflict}, status_code=409)
            offset, limit = body.get("offset"), int(body.get("limit", 100))
            deadline = time.monotonic() + min(float(body.get("timeout", 0)), 30.0)
            updates = bot.take(offset, limit)
            while not updates and time.monotonic() < deadline:  # the long poll
                await asyncio.sleep(0.02)
                updates = bot.take(None, limit)
            return JSONResponse({"ok": True, "result": updates})
        if method == "setWebhook":
            bot.webhook = {k: body[k] for k in ("url", "secret_token", "allowed_updates") if k in body}
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was set"})
        if method == "deleteWebhook":
            bot.webhook = {}
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was deleted"})
        if method == "getWebhookInfo":
            info = {"url": bot.webhook.get("url", ""), "has_custom_certificate": False, "pending_update_count": 0}
            if "allowed_updates" in bot.webhook:
                info["allowed_updates"] = bot.webhook["allowed_updates"]
            return JSONResponse({"ok": True, "result": info})
        if method == "sendChatAction":
            return JSONResponse({"ok": True, "result": True})
        if method == "getFile" and body.get("file_id") in bot.files:
            file_id = body["file_id"]
            result = {"file_id": file_id, "file_size": len(bot.files[file_id]), "file_path": f"photos/{file_id}.jpg"}
            return JSONResponse({"ok": True, "result": result})
        return JSONResponse({"ok": False, "error_code": 400, "description": "Bad Request"}, status_code=400)

    async def telegram_file(request: Request) -> Response:
        if not request.path_params["bot"].startswith("bot"):
            return Response(status_code=404)
        file_id = request.path_params["name"].removesuffix(".jpg")
        content = fake.bot.files.get(file_id)
        return Response(content, media_type="image/jpeg") if content is not None else Response(status_code=404)

    async def whatsapp_send(request: Request) -> Response:
        await record("whatsapp", request)
        body = fake.sent[-1]["body"]
        if body.get("type") == "image":
            media = fake.whatsapp_media.get((body.get("image") or {}).get("id"))
            if media is None:
                error = {"message": "Invalid media id", "type": "OAuthException", "code": 100}
                return JSONResponse({"error": error}, status_code=400)
            fake.photos.append({"channel": "whatsapp", "chat": body.get("to"), **media})
        return JSONResponse({"messaging_product": "whatsapp", "messages": [{"id": f"wamid.out{len(fake.sent)}"}]})

    async def whatsapp_upload(request: Request) -> Response:
        sent = await upload(request, "file")
        if sent is None or sent.get("messaging_product") != "whatsapp":
            error = {"message": "(#100) The parameter file is required.", "type": "OAuthException", "code": 100}
            return JSONResponse({"error": error}, status_code=400)
        media_id = f"media{len(fake.whatsapp_media) + 1}"
        fake.whatsapp_media[media_id] = {**sent, "headers": dict(request.headers), "path": request.url.path}
        return JSONResponse({"id": media_id})

    async def wecom_token(request: Request) -> Response:
        fake.tokens_issued.append(dict(request.query_params))
        return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": WECOM_ACCESS_TOKEN, "expires_in": 7200})

    async def wecom_send(request: Request) -> Response:
        if request.query_params.get("access_token") != WECOM_ACCESS_TOKEN:
            return JSONResponse({"errcode": 40014, "errmsg": "invalid access_token"})
        await record("wecom", request)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": f"m{len(fake.sent)}"})

    return [
        Route("/cgi-bin/gettoken", wecom_token, methods=["GET"]),
        Route("/cgi-bin/message/send", wecom_send, methods=["POST"]),
        Route("/{bot}/sendMessage", telegram_send, methods=["POST"]),
        Route("/file/{bot}/photos/{name}", telegram_file, methods=["GET"]),
        Route("/{phone}/messages", whatsapp_send, methods=["POST"]),
        Route("/{phone}/media", whatsapp_upload, methods=["POST"]),
        Route("/{bot}/{method}", telegram_method, methods=["GET", "POST"]),  # after /{phone}/messages
    ]


def start_platforms() -> tuple[FakePlatforms, uvicorn.Server, threading.Thread]:
    fake = FakePlatforms(port=free_port())
    server, thread = serve_in_thread(_routes(fake), fake.port)
    return fake, server, thread
