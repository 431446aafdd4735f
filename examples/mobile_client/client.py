"""A reference client of the engine's websocket channel (docs/websocket.md), as a phone app would
run it: it keeps a connection up, and gets every message it was given answered exactly once.

    async with MobileClient("ws://127.0.0.1:8080/ws", "outbox.sqlite3", headers=auth) as client:
        reply = await client.send("hello")          # waits for the reply (a Reply)
        async for event in client.events(): ...      # Chunk, Reply, Failed, Connected, Disconnected

What it does for the app:
- every message is written to the local cache (cache.py) under a fresh id before it is sent;
- it answers the engine's `ping` with `pong`, and takes a connection on which nothing arrived for
  `MISSED_HEARTBEATS` heartbeats for dead (a phone that changed networks often gets no close): it
  drops it and reconnects;
- reconnects with backoff (websockets' own reconnecting `connect`), then asks for a `resume` after
  the last answered id and re-sends every id still pending (the engine never answers an id twice:
  a re-send follows the reply being generated or gets the stored one);
- hands each reply to the app once (the cache's pending → done step), and each chunk once (by
  `seq`: a re-sent id's chunks start again at 0; this object skips those it delivered);
- re-sends after `retry_after` on `rate_limited`/`overloaded`, and on the next connection after
  `unavailable` (an engine shutting down); any other error fails that message (`Failed`, and
  `send` raises `ReplyFailed`).
A refused handshake (401, 403, ...) is fatal: `send` raises `ClientRefused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, backoff, connect, process_exception
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .cache import Cache, Message

MISSED_HEARTBEATS = 3  # as the engine: this many heartbeats of silence and the connection is dead
RETRY_LATER = ("rate_limited", "overloaded")  # re-sent after retry_after on the same connection
RETRY_ON_RECONNECT = ("unavailable",)  # the engine is going away; the next connection re-sends


@dataclass(frozen=True)
class Connected:
    count: int  # connections this object opened so far


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Chunk:
    id: str
    seq: int
    delta: str


@dataclass(frozen=True)
class Reply:
    id: str
    text: str
    conversation_id: str
    message_id: str
    model: str
    replayed: bool


@dataclass(frozen=True)
class Failed:
    id: str | None
    code: str
    message: str


@dataclass(frozen=True)
class Other:
    frame: dict[str, Any]  # tool, approval_request, error frames without a pending id ...


Event = Connected | Disconnected | Chunk | Reply | Failed | Other


class ReplyFailed(Exception):
    def __init__(self, failed: Failed) -> None:
        super().__init__(f"{failed.code}: {failed.message}")
        self.failed = failed


class ClientRefused(Exception):
    """The engine refused the handshake (bad key, not allowed, another site's origin ...)."""


def _retryable(exc: Exception) -> Exception | None:
    if isinstance(exc, InvalidStatus) and exc.response.status_code == 429:
        return None
    return process_exception(exc)


class MobileClient:
    def __init__(
        self,
        url: str,
        cache_path: str | Path,
        *,
        headers: Mapping[str, str] | None = None,
        heartbeat_seconds: float = 30.0,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        """`heartbeat_seconds` is the channel's (`channels.websocket.heartbeat_seconds`)."""
        self.url = url
        self.cache = Cache(cache_path)
        self.headers = dict(headers or {})
        self.heartbeat = heartbeat_seconds
        self.connections = 0
        self.pongs_sent = 0
        self.chats_sent = 0  # chat frames sent, re-sends included
        self._delays = functools.partial(
            backoff, initial_delay=min(1.0, heartbeat_seconds), min_delay=0.2, max_delay=max_backoff_seconds
        )
        self._ws: ClientConnection | None = None
        self._resuming: str | None = None  # the last_id of a resume whose `resumed` has not come
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._chunks_seen: dict[str, int] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused: ClientRefused | None = None

    async def __aenter__(self) -> MobileClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the cache and start connecting; pending messages of an earlier run are re-sent."""
        await self.cache.open()
        self._runner = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop; what is still pending stays in the cache for the next client object."""
        for task in [*self._tasks, *([self._runner] if self._runner else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._runner] if self._runner else []), return_exceptions=True)
        for future in self._waiting.values():
            future.cancel()
        await self.cache.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def submit(self, text: str, conversation_id: str | None = None, model: str | None = None) -> str:
        """Cache the message and send it now if connected (else on the next connection); its id.
        The reply comes as a `Reply` event (also to a later client object on the same cache)."""
        return (await self._submit(text, conversation_id, model, None)).id

    async def send(self, text: str, conversation_id: str | None = None, model: str | None = None) -> Reply:
        """Send a message and wait for its reply, however many reconnects that takes. Cancelling
        the wait leaves the message pending in the cache."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        message = await self._submit(text, conversation_id, model, future)
        try:
            return await future
        finally:
            self._waiting.pop(message.id, None)

    async def _submit(
        self, text: str, conversation_id: str | None, model: str | None, future: asyncio.Future[Reply] | None
    ) -> Message:
        if self._refused:
            raise self._refused
        message = await self.cache.add(text, conversation_id, model)
        if self._refused:  # refused while the cache wrote: the message waits for a client that may connect
            raise self._refused
        if future is not None:  # before sending: a fast reply must find it
            self._waiting[message.id] = future
        if self._ws is not None and self._resuming is None:
            await self._transmit(self._ws, message)
        return message

    async def events(self) -> AsyncIterator[Event]:
        """Everything that happens, in order: connections, chunks, replies, failures."""
        while True:
            yield await self._events.get()

    async def _run(self) -> None:
        try:
            async for ws in connect(
                self.url,
                additional_headers=self.headers,
                proxy=None,
                reconnect_delays=self._delays,
                process_exception=_retryable,
            ):
                self.connections += 1
                self._ws = ws
                self._events.put_nowait(Connected(self.connections))
                reason = await self._serve(ws)
                self._ws = None
                self._events.put_nowait(Disconnected(reason))
        except InvalidStatus as exc:
            self._refuse(ClientRefused(f"handshake refused: HTTP {exc.response.status_code}"))
        finally:
            self._ws = None

    async def _serve(self, ws: ClientConnection) -> str:
        """Read one connection until it ends; why it ended."""
        try:
            await self._start_session(ws)
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), self.heartbeat * MISSED_HEARTBEATS)
                except TimeoutError:
                    ws.transport.abort()  # no ping for 3 heartbeats: the link is gone, do not wait for a close
                    return "no heartbeat"
                await self._on_frame(ws, json.loads(raw))
        except ConnectionClosed as exc:
            return f"closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"

    async def _start_session(self, ws: ClientConnection) -> None:
        """Resume after the last answered id, then (when `resumed` comes) re-send what is pending."""
        self._resuming = await self.cache.resume_point()
        if self._resuming is None:
            await self._resend(ws)
        else:
            await ws.send(json.dumps({"type": "resume", "last_id": self._resuming}))

    async def _resend(self, ws: ClientConnection) -> None:
        self._resuming = None
        for message in await self.cache.pending():
            await self._transmit(ws, message)

    async def _transmit(self, ws: ClientConnection, message: Message) -> None:
        with contextlib.suppress(ConnectionClosed):  # the next connection re-sends it
            await ws.send(json.dumps(message.frame()))
            self.chats_sent += 1

    async def _on_frame(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        kind, client_id = frame.get("type"), frame.get("id")
        if kind == "ping":
            await ws.send(json.dumps({"type": "pong"}))
            self.pongs_sent += 1
        elif kind == "chunk":
            if frame["seq"] > self._chunks_seen.get(client_id, -1):
                self._chunks_seen[client_id] = frame["seq"]
                self._events.put_nowait(Chunk(client_id, frame["seq"], frame["delta"]))
        elif kind == "done":
            await self._deliver(frame)
        elif kind == "resumed" or (kind == "error" and self._resuming and client_id == self._resuming):
            await self._resend(ws)  # after the replay, or the engine no longer knows that id
        elif kind == "error" and client_id and await self.cache.is_pending(client_id):
            await self._on_error(ws, frame)
        elif kind != "pong":
            self._events.put_nowait(Other(frame))

    async def _deliver(self, frame: dict[str, Any]) -> None:
        reply = Reply(
            frame["id"],
            frame["reply"],
            frame["conversation_id"],
            frame["message_id"],
            frame["model"],
            frame["replayed"],
        )
        if not await self.cache.settle(reply.id, reply=reply.text):
            return  # delivered before (or another device's message replayed by a resume)
        self._chunks_seen.pop(reply.id, None)
        self._events.put_nowait(reply)
        future = self._waiting.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply)

    async def _on_error(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        client_id, code = frame["id"], frame["code"]
        if code in RETRY_ON_RECONNECT:
            return
        if code in RETRY_LATER:
            self._spawn(self._resend_later(ws, client_id, float(frame.get("retry_after", 1))))
            return
        failed = Failed(client_id, code, frame.get("message", ""))
        if await self.cache.settle(client_id, error=f"{code}: {failed.message}"):
            self._events.put_nowait(failed)
            future = self._waiting.get(client_id)
            if future is not None and not future.done():
                future.set_exception(ReplyFailed(failed))

    async def _resend_later(self, ws: ClientConnection, client_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._ws is ws and await self.cache.is_pending(client_id):
            message = next((m for m in await self.cache.pending() if m.id == client_id), None)
            if message is not None:
                await self._transmit(ws, message)

    def _refuse(self, refused: ClientRefused) -> None:
        self._refused = refused
        self._events.put_nowait(Failed(None, "refused", str(refused)))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(refused)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
