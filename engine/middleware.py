"""Per request: a request id (kept from X-Request-ID when sane), one access log line, HTTP metrics.

Plain ASGI rather than BaseHTTPMiddleware so streamed responses pass through untouched and the
latency covers the whole body, up to the last SSE event.
"""

from __future__ import annotations

import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs, metrics

_INTERNAL_ERROR = b'{"error":{"code":"internal","message":"internal error, see the engine log"}}'
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_STATUS = {code: str(code) for code in range(100, 600)}


def request_id(scope: Scope) -> str:
    return scope.get("state", {}).get("request_id", "-")


class AccessMiddleware:
    def __init__(self, app: ASGIApp, routes: frozenset[str]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(8).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        id_header = (b"x-request-id", rid.encode())
        status = 0  # 0 until the response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - one place turns any bug into a logged JSON 500
            logs.APP.exception("unhandled error", extra={"fields": {"request_id": rid, "route": scope["path"]}})
            if not status:
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": _INTERNAL_ERROR})
        finally:
            path, method = scope["path"], scope["method"]
            route = path if path in self.routes else "other"
            latency = time.perf_counter() - started
            code = status or 500
            metrics.child(metrics.HTTP_REQUESTS, route, method, _STATUS.get(code) or str(code)).inc()
            metrics.child(metrics.HTTP_DURATION, route).observe(latency)
            logs.event(
                logs.ACCESS,
                logging.INFO,
                request_id=rid,
                user=state.get("user"),
                method=method,
                route=route,
                status=code,
                latency_ms=latency * 1000,
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
