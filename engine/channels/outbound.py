"""Calls to a platform's send API over the engine's shared pooled HTTP client (upstream.ClientPool).

Credentials travel in URLs (Telegram's bot token is a path segment, WeCom's access token a query
parameter), so no error raised here carries the URL: only the status and a short body excerpt.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from yarl import URL

from ..models.adapters.base import UpstreamError, error_for_status
from ..models.upstream import ClientPool

_CONNECT_SECONDS = 5.0
_READ_SECONDS = 30.0
_EXCERPT = 200


class Outbound:
    """JSON calls to one platform API base, through the pool every adapter shares."""

    def __init__(self, clients: ClientPool, api_base: str) -> None:
        self.client = clients.get(api_base, _CONNECT_SECONDS, _READ_SECONDS)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The decoded JSON answer; a transport failure, an HTTP error or a non-JSON answer
        raises UpstreamError (whose message never includes the URL)."""
        url = URL(self.client.base_url + path)
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = orjson.dumps(body)
            sent["Content-Type"] = "application/json"
        try:
            async with self.client.session.request(method, url, params=params, data=data, headers=sent) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            timeout = isinstance(exc, TimeoutError)
            kind = "timeout" if timeout else f"connection error ({type(exc).__name__})"
            raise UpstreamError(f"platform API {kind}", retryable=True, timeout=timeout) from None
        text = raw[:_EXCERPT].decode("utf-8", "replace")
        if status >= 400:
            raise error_for_status(status, text)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"platform API sent invalid JSON: {text[:80]}", retryable=False) from None
        if not isinstance(data, dict):
            raise UpstreamError("platform API sent JSON that is not an object", retryable=False)
        return data
