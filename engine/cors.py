"""CORS: which other sites' pages may call the API from a browser (`channels.web.cors_origins`).

One place answers CORS, the engine, so a browser gets the same answer whichever way it comes: to an
engine directly (`make run` without nginx, an engine-only host) or through the edge. nginx proxies
OPTIONS like any other method and passes the engine's Access-Control-* headers through untouched
(templates/nginx/site.conf.j2 adds none and hides none). Answering in nginx as well, with a `map`
of origins and `add_header`, would be a second implementation that could disagree with this one on
a near-miss origin, and would put spec text into nginx's configuration; the price of one place is
that a preflight travels to the engine (and counts against nginx's rate limit, like any request).
What nginx answers itself (its 429, 413, 502) carries no CORS headers: a page sees those as a
network error, and should retry later.

Origins are exact (the schema admits only `scheme://host[:port]` as browsers send them, or `*`
alone). Credentials are never allowed: a page sends the API key in `Authorization`, which CORS
governs as a request header, not as a credential; no cookie ever authenticates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

from .settings import CORS_ORIGIN_PATTERN, EngineSettings

METHODS = ("GET", "POST", "PUT", "DELETE")
REQUEST_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
# Response headers a page may read besides the safelisted ones: the id to quote in a bug report,
# and how long to wait after a 429 or 503.
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")
MAX_AGE_SECONDS = 600


class Cors(CORSMiddleware):
    """Starlette's CORSMiddleware, silent towards an origin it does not allow: no Access-Control-*
    header at all (Starlette still lists its methods and headers in a refused preflight, and its
    Expose-Headers on any response to any origin)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=METHODS,
            allow_headers=REQUEST_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=MAX_AGE_SECONDS,
        )
        if not self.allow_all_origins:  # added per response, to allowed origins only
            self._exposed = self.simple_headers.pop("Access-Control-Expose-Headers")

    def preflight_response(self, request_headers: Headers) -> Response:
        if not self.is_allowed_origin(request_headers["origin"]):
            return PlainTextResponse("Disallowed CORS origin", status_code=400, headers={"Vary": "Origin"})
        return super().preflight_response(request_headers)

    def allow_explicit_origin(self, headers: MutableHeaders, origin: str) -> None:  # Starlette: a staticmethod
        CORSMiddleware.allow_explicit_origin(headers, origin)
        headers["Access-Control-Expose-Headers"] = self._exposed


def middleware(settings: EngineSettings) -> list[Middleware]:
    """The CORS layer when the web channel lists origins; none otherwise (no CORS header at all)."""
    web = next((c for c in settings.channels if c.name == "web"), None)
    if web is None or not web.cors_origins:
        return []
    return [Middleware(Cors, origins=list(web.cors_origins))]


def websocket_origin_allowed(settings: EngineSettings, origin: str | None, hosts: Iterable[str | None]) -> bool:
    """Whether a websocket handshake carrying this `Origin` may open: the defence against
    cross-site WebSocket hijacking. A browser lets any page open a websocket to any address (this
    engine on loopback, where the anonymous user needs no key, included) and CORS does not apply
    to websockets; but it always names the page in `Origin`, which no page can set.

    Allowed: no Origin (not a browser: its credentials decide); an origin CORS allows
    (`channels.web.cors_origins`, exact, or `*`); the page's own, whose `host[:port]` is one of
    `hosts`, the Host the client connected to (the Host header, and X-Forwarded-Host, where nginx
    passes the browser's Host with its port; a page can set neither). Anything else, `null` and
    what is not an origin as browsers write it (CORS_ORIGIN_PATTERN) included, is refused."""
    if origin is None:
        return True
    if origin == "*" or not re.fullmatch(CORS_ORIGIN_PATTERN, origin):
        return False
    web = next((c for c in settings.channels if c.name == "web"), None)
    listed = web.cors_origins if web is not None else []
    if "*" in listed or origin in listed:
        return True
    return origin.split("://", 1)[1] in {host.strip().lower() for host in hosts if host}
