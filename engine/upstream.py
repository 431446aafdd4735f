"""One pooled HTTP client per upstream, and the two call shapes adapters need (JSON, line stream).

Transport: httpx's API over aiohttp's connection pool (httpx-aiohttp). Measured on this machine
kind, plain httpx tops out around 600-1,500 forwarded req/s while aiohttp's pool does ~10x that,
so the aiohttp transport is the default; ASSISTANT_ENGINE_HTTP_TRANSPORT=httpx selects plain
httpx (used by bench/engine_chat.py to measure the difference).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .adapters.base import UpstreamError, error_for_status

TRANSPORT_ENV = "ASSISTANT_ENGINE_HTTP_TRANSPORT"
_POOL_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)


class ClientPool:
    """HTTP clients keyed by (api_base, timeouts), shared by every adapter and kept across reloads."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, float, float], httpx.AsyncClient] = {}
        self.transport_name = os.environ.get(TRANSPORT_ENV, "aiohttp")

    def get(self, base_url: str, connect_timeout: float, read_timeout: float) -> httpx.AsyncClient:
        key = (base_url, connect_timeout, read_timeout)
        client = self._clients.get(key)
        if client is None:
            timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout + read_timeout)
            client = httpx.AsyncClient(
                base_url=base_url, timeout=timeout, transport=self._transport(), limits=_POOL_LIMITS
            )
            self._clients[key] = client
        return client

    def _transport(self) -> httpx.AsyncBaseTransport | None:
        if self.transport_name == "httpx":
            return None  # httpx's own pool
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=_POOL_LIMITS)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _transport_error(exc: httpx.HTTPError) -> UpstreamError:
    timeout = isinstance(exc, httpx.TimeoutException)
    kind = "timeout" if timeout else "connection error"
    return UpstreamError(f"upstream {kind}: {type(exc).__name__} {exc}".strip(), retryable=True, timeout=timeout)


async def post_json(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """POST a JSON body, return the decoded JSON answer; any failure becomes an `UpstreamError`."""
    try:
        response = await client.post(path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise _transport_error(exc) from exc
    if response.status_code >= 400:
        raise error_for_status(response.status_code, response.text)
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamError("upstream sent invalid JSON", retryable=False) from exc


@asynccontextmanager
async def _open_stream(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[httpx.Response]:
    try:
        async with client.stream("POST", path, json=body, headers=headers) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", "replace")
                raise error_for_status(response.status_code, text)
            yield response
    except httpx.HTTPError as exc:
        raise _transport_error(exc) from exc


async def stream_lines(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[str]:
    """POST and yield the answer's non-empty lines as they arrive (SSE or NDJSON).

    Closing the iterator (for instance because our own client went away) closes the upstream
    connection, which is how an upstream generation gets stopped.
    """
    async with _open_stream(client, path, body, headers) as response:
        try:
            async for line in response.aiter_lines():
                if line:
                    yield line
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc


def sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line, or None for comments, `event:` lines and the like."""
    if not line.startswith("data:"):
        return None
    return line[5:].lstrip(" ")


def loads(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UpstreamError(f"upstream sent invalid JSON: {text[:80]}", retryable=False) from exc


def request_headers(request_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"X-Request-ID": request_id} if request_id and request_id != "-" else {}
    return {**headers, **(extra or {})}
