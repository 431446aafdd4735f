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
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        started_response = False

        async def send_tracked(message: Message) -> None:
            nonlocal started_response
            started_response = True
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:  # noqa: BLE001 - one place turns any bug into a logged JSON 500
            logs.APP.exception("unhandled error", extra={"fields": {"request_id": rid, "route": scope["path"]}})
            if not started_response:
                await send_tracked(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send_tracked({"type": "http.response.body", "body": _INTERNAL_ERROR})
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            latency = time.perf_counter() - started
            metrics.HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.HTTP_DURATION.labels(route).observe(latency)
            logs.event(
                logs.ACCESS,
                logging.INFO,
                request_id=rid,
                user=state.get("user"),
                method=scope["method"],
                route=route,
                status=status,
                latency_ms=latency * 1000,
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
