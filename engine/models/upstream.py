"""One pooled HTTP client per upstream, and the two call shapes adapters need (JSON, line stream).

Transport: aiohttp's client, used directly. Measured on this machine kind, plain httpx tops out
around 600-1,500 forwarded req/s and httpx's API over aiohttp's pool (httpx-aiohttp) still spent
about half of every forwarded request in httpx's request/response models; aiohttp alone is the
reference forwarder's client (bench/bare_forwarder.py). Bodies are encoded and decoded with orjson.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

import aiohttp
import orjson
from yarl import URL

from ..jsonio import dumps
from .adapters.base import Chunk, UpstreamError, error_for_status

_MAX_CONNECTIONS = 1000
_KEEPALIVE_SECONDS = 30
_JSON = {"Content-Type": "application/json"}


class HttpClient:
    """One upstream base URL with its timeouts, over an aiohttp session made on first use (inside
    the worker's event loop). Cookies are never kept: one user's upstream cookie must not travel
    with another user's request."""

    def __init__(self, base_url: str, connect_timeout: float, read_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        # connect covers waiting for a pooled connection too; sock_read is the gap between bytes.
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout + read_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    def url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ClientPool:
    """HTTP clients keyed by (api_base, timeouts), shared by every adapter and kept across reloads."""

    transport_name = "aiohttp"

    def __init__(self) -> None:
        self._clients: dict[tuple[str, float, float], HttpClient] = {}

    def get(self, base_url: str, connect_timeout: float, read_timeout: float) -> HttpClient:
        key = (base_url, connect_timeout, read_timeout)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = HttpClient(base_url, connect_timeout, read_timeout)
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _transport_error(exc: BaseException) -> UpstreamError:
    """The failure with aiohttp's words, which name the upstream's host:port: fit for the engine.model
    log line and nothing else (what a client reads comes from errors.upstream_failure)."""
    timeout = isinstance(exc, TimeoutError)
    kind = "timeout" if timeout else "connection error"
    return UpstreamError(f"upstream {kind}: {type(exc).__name__} {exc}".strip(), retryable=True, timeout=timeout)


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


async def post_json(client: HttpClient, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """POST a JSON body, return the decoded JSON answer; any failure becomes an `UpstreamError`."""
    try:
        async with client.session.post(client.url(path), data=dumps(body), headers={**headers, **_JSON}) as r:
            status, raw = r.status, await r.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _transport_error(exc) from exc
    if status >= 400:
        raise error_for_status(status, _decoded(raw))
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("upstream sent invalid JSON", retryable=False) from exc


class LineParser(Protocol):
    """One streamed answer's lines (SSE or NDJSON) turned into chunks, line by line, with no I/O."""

    done: bool  # the upstream said the answer is complete; later lines are not fed

    def feed(self, line: str) -> list[Chunk]:
        """The chunks this line carries (often none); raises `UpstreamError` for an error event."""

    def end(self) -> Chunk:
        """The closing chunk (usage, finish reason); raises `UpstreamError` if the answer was cut short."""


async def stream_chunks(
    client: HttpClient, path: str, body: dict[str, Any], headers: dict[str, str], parser: LineParser
) -> AsyncIterator[list[Chunk]]:
    """POST and yield, per network read, the chunks its lines carried, ending with `parser.end()`.

    Lists rather than single chunks: a fast upstream often delivers many events per read, and each
    layer between here and the client then takes one step per read instead of one per event. A
    parser's `UpstreamError` is raised after the chunks that came before it have been yielded.
    """
    async with aclosing(_line_batches(client, path, body, headers)) as batches:
        async for lines in batches:
            batch: list[Chunk] = []
            try:
                for line in lines:
                    batch += parser.feed(line)
                    if parser.done:
                        break
            except UpstreamError:
                if batch:
                    yield batch
                raise
            if parser.done:
                batch.append(parser.end())
                yield batch
                return
            if batch:
                yield batch
    yield [parser.end()]


async def _line_batches(
    client: HttpClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[list[str]]:
    """POST and yield the answer's non-empty lines, as a list per network read, as they arrive.

    Closing the iterator early (for instance because our own client went away) closes the upstream
    connection, which is how an upstream generation gets stopped; once the whole answer has
    arrived, aiohttp has returned the connection to its pool already. Lines have no length limit.
    """
    try:
        async with client.session.post(client.url(path), data=dumps(body), headers={**headers, **_JSON}) as r:
            if r.status >= 400:
                raise error_for_status(r.status, _decoded(await r.read()))
            finished = False
            try:
                pending = b""
                async for data in r.content.iter_any():
                    lines = (pending + data).splitlines()
                    pending = lines.pop() if data[-1] not in b"\r\n" else b""
                    decoded = [_decoded(line) for line in lines if line]
                    if decoded:
                        yield decoded
                if pending:
                    yield [_decoded(pending)]
                finished = True
            finally:
                if not finished:
                    r.close()  # drop the connection: the upstream sees the hang-up and stops
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _transport_error(exc) from exc


def sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line, or None for comments, `event:` lines and the like."""
    if not line.startswith("data:"):
        return None
    return line[5:].lstrip(" ")


def loads(text: str) -> dict[str, Any]:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"upstream sent invalid JSON: {text[:80]}", retryable=False) from exc


def request_headers(request_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"X-Request-ID": request_id} if request_id and request_id != "-" else {}
    return {**headers, **(extra or {})}
