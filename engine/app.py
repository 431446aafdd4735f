"""The ASGI app: routes, middleware, error handlers, and the worker's start/stop/reload hooks.

`create_app()` is the uvicorn factory. It reads the settings path from ASSISTANT_ENGINE_SETTINGS
so that every uvicorn worker process can build its own app.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp

from . import channels, cors, http_protocol, logs, metrics
from .api import admin, chat, files, history, openai, openapi, page, ws
from .api.replies import Replies
from .errors import ApiError, api_error_handler, http_error_handler
from .limits.policy import LIMITS
from .middleware import AccessMiddleware
from .runtime import Runtime
from .security import edge
from .settings import SETTINGS_ENV

_RATE_LIMITED_ROUTES = ("/api/v1/chat", "/api/v1/chat/stream", "/api/v1/history", "/v1/chat/completions")
_GC_YOUNG_THRESHOLD = 10_000  # net new container objects between young collections (default 700)
# On shutdown, websocket replies still being generated get this long to finish and be stored.
_REPLY_GRACE_SECONDS = 5.0


def routes(
    metrics_path: str | None,
    websocket_path: str | None = None,
    webhooks: dict[str, tuple[str, ...]] | None = None,
    web: bool = False,
) -> list[BaseRoute]:
    # Starlette's router tries routes in order (these paths never overlap): the busiest first.
    table = [
        Route("/v1/chat/completions", openai.chat_completions, methods=["POST"]),
        Route("/api/v1/chat", chat.chat, methods=["POST"]),
        Route("/api/v1/chat/stream", chat.chat_stream, methods=["POST"]),
        Route("/health", admin.health, methods=["GET"]),
        Route("/ready", admin.ready, methods=["GET"]),
        Route("/api/v1/history", chat.history, methods=["GET"]),
        Route("/v1/models", openai.list_models, methods=["GET"]),
        Route("/admin/v1/default-model", admin.set_default_model, methods=["PUT"]),
        Route("/openapi.json", openapi.endpoint, methods=["GET"]),
        Route("/api/v1/conversations", history.list_conversations, methods=["GET"]),
        Route("/api/v1/conversations/{conversation_id}", history.delete_conversation, methods=["DELETE"]),
        Route("/api/v1/users/{user}/history", history.delete_user_history, methods=["DELETE"]),
        Route("/admin/v1/history/keys", history.history_keys, methods=["GET"]),
        Route("/api/v1/workspace/screenshots/{name}", files.screenshot, methods=["GET"]),
    ]
    if websocket_path:
        table.append(WebSocketRoute(websocket_path, ws.endpoint))
    for path, methods in (webhooks or {}).items():  # path -> methods of each enabled webhook channel
        table.append(Route(path, channels.endpoint, methods=list(methods)))
    if web:  # the chat page (engine/api/page.py), last: the least busy
        table += [Route("/", page.index, methods=["GET"]), Route("/web/{name}", page.asset, methods=["GET"])]
    if metrics_path:
        table.append(Route(metrics_path, metrics.metrics_endpoint, methods=["GET"]))
    return table


class _Engine(Starlette):
    """Starlette minus its outermost ServerErrorMiddleware. AccessMiddleware, right inside it,
    already answers any exception with a logged JSON 500 and never lets one through, so that layer
    never acted; it only added a send wrapper to every request (measured: ~3% of a request's CPU).
    Should AccessMiddleware itself fail, uvicorn logs it and answers the same plain-text 500."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return stack.app if isinstance(stack, ServerErrorMiddleware) else stack


def build_app(rt: Runtime) -> Starlette:
    settings = rt.settings
    websocket_path = ws.path(settings)
    webhooks = channels.Webhooks(settings, rt.secrets)
    web = any(c.name == "web" for c in settings.channels)
    table = routes(settings.metrics_path if settings.metrics_enabled else None, websocket_path, webhooks.routes(), web)
    for path in (*_RATE_LIMITED_ROUTES, *([websocket_path] if websocket_path else [])):
        metrics.RATE_LIMITED.labels(path)  # show the counter at 0 before the first refusal
    for limit in LIMITS:
        metrics.LIMIT_REFUSALS.labels(limit)
    replies = Replies()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await rt.start()
        webhooks.start(rt)
        _on_sighup(rt)
        _on_retire()
        # What start-up allocated lives as long as the worker: keep the collector's full passes
        # from walking it again and again (measured on the history route: half the collector's time).
        gc.freeze()
        # Requests in flight hold a few thousand containers between them, so the default young
        # threshold (700) set off a collection every few requests that walked them all: ~5% of a
        # worker's CPU under load (perf). At 10,000 those collections all but vanish.
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            await replies.close(min(_REPLY_GRACE_SECONDS, settings.request_timeout_seconds))
            await webhooks.close(min(_REPLY_GRACE_SECONDS, settings.request_timeout_seconds))
            await rt.stop()
            metrics.forget_this_process()

    app = _Engine(
        routes=table,
        # CORS inside the access log (preflights are logged and counted like any request) and outside
        # the routes, so a preflight needs no route of its own and errors carry the headers too.
        middleware=[
            *_edge_middleware(rt),
            Middleware(AccessMiddleware, routes=frozenset(r.path for r in table)),
            *cors.middleware(settings),
        ],
        exception_handlers={ApiError: api_error_handler, HTTPException: http_error_handler},
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.replies = replies
    app.state.webhooks = webhooks
    app.state.page = page.load(websocket_path) if web else None
    return app


def _edge_middleware(rt: Runtime) -> list[Middleware]:
    """The edge guard (engine-only hosts) outermost, then X-Forwarded-For from trusted peers only."""
    security = rt.settings.security
    edges, proxies = list(security.edge_addresses), list(security.trusted_proxies)
    layers = [Middleware(edge.proxy_headers_middleware, edge_addresses=edges, trusted_proxies=proxies)]
    if security.edge_secret:
        secret = rt.secrets.get(security.edge_secret)
        if not secret:
            raise RuntimeError(f"edge_secret names secret {security.edge_secret!r}, which is not in the secrets file")
        path = rt.settings.metrics_path if rt.settings.metrics_enabled else None
        scrape = {"metrics_path": path, "metrics_networks": list(security.metrics_allow_networks)}
        guard = Middleware(edge.EdgeGuard, edge_addresses=list(security.edge_addresses), secret=secret, **scrape)
        layers.insert(0, guard)
    return layers


def create_app() -> Starlette:
    path = os.environ.get(SETTINGS_ENV)
    if not path:
        raise RuntimeError(f"{SETTINGS_ENV} must name the engine's settings.json")
    return build_app(Runtime(path))


def _on_sighup(rt: Runtime) -> None:
    """SIGHUP re-reads the settings file in place. The engine's parent (engine/workers.py) gets the
    operator's SIGHUP and forwards it here when only reloadable settings changed; otherwise it rolls
    the workers instead, each new one reading the file anew."""
    import asyncio

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, rt.reload)


def _on_retire() -> None:
    """SIGUSR1: the engine's parent retires this worker in a roll while other workers serve
    (engine/workers.py). Shut down gracefully, draining kept connections (engine/http_protocol.py)."""
    import asyncio

    def retire() -> None:
        logs.event(logs.APP, logging.INFO, f"worker {os.getpid()} retiring: draining its connections")
        http_protocol.drain_on_shutdown()
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own graceful shutdown

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, retire)
