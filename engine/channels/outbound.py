"""Calls to a platform's send API over the engine's shared pooled HTTP client (upstream.ClientPool):
JSON bodies (`call`), and multipart uploads of one file (`upload`: a photo).

Credentials travel in URLs (Telegram's bot token is a path segment, WeCom's access token a query
parameter), so no error raised here carries the URL: only the status and a short body excerpt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from ..models.adapters.base import UpstreamError, error_for_status
from ..models.upstream import ClientPool

_CONNECT_SECONDS = 5.0
_READ_SECONDS = 30.0
_EXCERPT = 200


@dataclass(frozen=True)
class File:
    """One file of a multipart upload: the form field it goes in, its name and type, its bytes."""

    field: str
    filename: str
    content_type: str
    data: bytes


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
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = orjson.dumps(body)
            sent["Content-Type"] = "application/json"
        return await self._request(method, path, params, data, sent)

    async def upload(
        self, path: str, fields: dict[str, str], file: File, *, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """POST `fields` and `file` as multipart/form-data; the decoded JSON answer, errors as `call`'s."""
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field(file.field, file.data, filename=file.filename, content_type=file.content_type)
        return await self._request("POST", path, None, form, dict(headers or {}))

    async def _request(
        self, method: str, path: str, params: dict[str, str] | None, data: Any, sent: dict[str, str]
    ) -> dict[str, Any]:
        url = URL(self.client.base_url + path)
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
