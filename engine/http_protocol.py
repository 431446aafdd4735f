"""uvicorn's httptools protocol, sending what one loop turn writes to a connection as one write.

uvicorn writes a response's status line and headers as soon as the app starts the response, and
the body with a second write; uvloop sends each at once. That is two syscalls and two TCP
segments per response, and behind nginx often two wake-ups and reads there, then two writes to
nginx's client. Collected until the end of the loop turn, a plain response leaves as one segment.
Measured on the 2-core bench (nginx -> engine, instant upstream), nginx then spent ~30% and wrk
~35% less CPU per request; see the README's Performance section.

It also bounds how long a client may take to send a request; uvicorn itself only times out idle
keep-alive connections, so a connection that sent half its headers (or nothing at all), or a body
shorter than its Content-Length, was held for ever (1,000 such requests held 1,022 descriptors):
- headers: they must be complete within `header_timeout` of the request's first byte (of the
  connection opening, for its first request). Late: a 408 if part of a request came, then close;
- body: it must be complete within `body_timeout` of the end of the headers. Late: a 408 if the
  response has not started, then close; the app sees the client gone (bodies.read_json answers
  its own 408, which nobody reads, so the access log records one).

And it lets a retiring worker drain (`drain_on_shutdown`, set when a roll retires the worker). uvicorn's
graceful shutdown closes idle keep-alive connections at once; nginx may be writing a request on one
at that moment, and it never retries a POST: a 502. Draining, idle connections stay open for
`DRAIN_SECONDS`, longer than nginx keeps an idle upstream connection (templates/nginx/site.conf.j2),
so nginx closes them first; a request that still arrives on one is answered with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .jsonio import dumps

# The settings' defaults (engine/settings/), for a protocol made without `protocol(...)`.
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0

# How long the engine keeps an idle keep-alive connection, and a retiring worker drains one: both
# longer than nginx's upstream keepalive_timeout (4 s), so nginx is the side that closes them.
KEEP_ALIVE_SECONDS = 30
DRAIN_SECONDS = 6.0

_draining = False  # this worker is being retired while others serve: drain instead of closing


def drain_on_shutdown() -> None:
    """From now on, the graceful shutdown drains this process's idle connections (see above)."""
    global _draining
    _draining = True


class CoalescingTransport:
    """A connection's transport whose writes wait for the end of the current loop turn and then
    go out together, in order. Everything else is the real transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`http=` for uvicorn: the httptools protocol over a `CoalescingTransport`, with header and
    body timeouts. Pass the timeouts with `protocol(...)`, which uvicorn can take as its `http`."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._request_begun = False  # part of a request arrived, its headers have not ended yet
        self._drain: asyncio.TimerHandle | None = None  # set while a retiring worker drains it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm(self.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._drain is not None:
            self._drain.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._deadline is None:  # a keep-alive connection's next request; the first one's clock runs
            self._arm(self.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._request_begun = False
        super().on_headers_complete()
        if self._drain is not None:  # a request on a draining connection: its last
            self.cycle.keep_alive = False
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._arm(self.body_timeout, self._body_late)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the websocket protocol takes the connection over, with its own pings
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown; a draining worker keeps an idle connection for DRAIN_SECONDS."""
        if not _draining:
            super().shutdown()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        self._drain = self.loop.call_later(DRAIN_SECONDS, self._drained)

    def _drained(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a response is on its way: close once it is out
            return
        if self._request_begun:
            self._refuse("header_timeout", f"the request headers did not arrive within {self.header_timeout:g} s")
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if not cycle.response_started and not self.pipeline:
            self._refuse("body_timeout", f"the request body did not arrive within {self.body_timeout:g} s")
        cycle.disconnected = True  # the app's receive() now says http.disconnect; its sends go nowhere
        cycle.message_event.set()
        self.transport.close()

    def _refuse(self, code: str, message: str) -> None:
        """A 408 with the API's JSON error body, written straight to the connection."""
        body = dumps({"error": {"code": code, "message": message}})
        head = [b"HTTP/1.1 408 Request Timeout\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)


def protocol(header_timeout: float, body_timeout: float) -> Callable[..., CoalescingHttpToolsProtocol]:
    """uvicorn's `http=`: the protocol with these timeouts (a partial, so it pickles for workers)."""
    return functools.partial(CoalescingHttpToolsProtocol, header_timeout=header_timeout, body_timeout=body_timeout)
