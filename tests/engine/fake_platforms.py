"""A fake of the chat platforms' send APIs (Telegram, WhatsApp Cloud, WeCom) run in a thread on loopback.

It records every reply the engine sends (`sent`: channel, path, query, headers, body) and every
WeCom access token it hands out, so tests can count replies and check what they carried.
"""

from __future__ import annotations

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
class FakePlatforms:
    port: int
    sent: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: list[dict[str, str]] = field(default_factory=list)

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

    async def whatsapp_send(request: Request) -> Response:
        await record("whatsapp", request)
        return JSONResponse({"messaging_product": "whatsapp", "messages": [{"id": f"wamid.out{len(fake.sent)}"}]})

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
        Route("/{phone}/messages", whatsapp_send, methods=["POST"]),
    ]


def start_platforms() -> tuple[FakePlatforms, uvicorn.Server, threading.Thread]:
    fake = FakePlatforms(port=free_port())
    server, thread = serve_in_thread(_routes(fake), fake.port)
    return fake, server, thread
