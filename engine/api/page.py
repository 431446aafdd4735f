"""The web chat page: `GET /` (the page) and `GET /web/<hashed name>` (its script and style sheet).

Served when the settings list the `web` channel. The files live in engine/web/ and ship in the
engine's wheel. They are read once, when the app is built (never on the event loop): each asset is
served under a name carrying a hash of its content, cached for a year as immutable, and the page
itself is revalidated on every load (ETag + `no-cache`), so a new release is picked up at once.

Every response carries the same strict Content-Security-Policy with or without nginx in front
(nginx passes the engine's headers through): scripts and styles from this origin only, no inline
script, no eval, no framing. The page renders model and user text by building DOM nodes with
textContent (engine/web/app.js), never by parsing it as HTML.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


@dataclass(frozen=True)
class Page:
    """The page's bytes and its assets by their hashed names (`app.3f2a9c1b7d4e.js`)."""

    index: bytes
    etag: str
    assets: dict[str, Asset]


def load(websocket_path: str | None, folder: Path = WEB_DIR) -> Page:
    """Read engine/web/ and name each asset by its content hash; index.html's `{{app.js}}` and
    `{{app.css}}` become those names, `{{websocket_path}}` the channel's path ("" when it is off).
    Raises OSError when a file is missing."""
    assets: dict[str, Asset] = {}
    index = (folder / "index.html").read_text(encoding="utf-8")
    index = index.replace("{{websocket_path}}", html.escape(websocket_path or "", quote=True))
    for name, media_type in _ASSETS.items():
        body = (folder / name).read_bytes()
        stem, _, ext = name.rpartition(".")
        hashed = f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"
        assets[hashed] = Asset(body, media_type)
        index = index.replace("{{" + name + "}}", f"/web/{hashed}")
    data = index.encode()
    return Page(data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"', assets)


async def index(request: Request) -> Response:
    page: Page = request.app.state.page
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": page.etag}
    if page.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(page.index, media_type="text/html; charset=utf-8", headers=headers)


async def asset(request: Request) -> Response:
    page: Page = request.app.state.page
    found = page.assets.get(request.path_params["name"])
    if found is None:  # an old release's name: the page that asked for it is reloaded anyway
        raise ApiError(404, "not_found", "no such file")
    headers = {**_SECURITY_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"}
    return Response(found.body, media_type=found.media_type, headers=headers)
