"""Server-sent events: `data: <json>\\n\\n` framing and a response that notices a client leaving.

Starlette's StreamingResponse only notices a disconnect when the next send fails; while the
upstream model is thinking nothing is sent, so that could be a minute of wasted generation. This
response listens for the disconnect while it streams and cancels the body iterator at once, which
closes the upstream call.

It also coalesces: the body iterator runs in a task of its own and every event it has produced by
the time it waits for the upstream again goes out in one write. An upstream usually delivers
several events per network read; relaying them one write each cost a syscall and four ASGI send
layers per event, which was the largest single cost of a streamed request. Events are never held
back while the iterator is waiting, so nothing reaches the client later than before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..jsonio import dumps

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_HIGH_WATER_EVENTS = 64  # events waiting for the client before the producer waits too


def event(data: Any) -> bytes:
    """One SSE event carrying JSON (JSON never contains a raw newline, so one data line is enough)."""
    if isinstance(data, str):
        return b"data: " + data.encode() + b"\n\n"
    return b"data: " + dumps(data) + b"\n\n"


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, content: Any, status_code: int = 200) -> None:
        super().__init__(content, status_code=status_code, headers=SSE_HEADERS, media_type=self.media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        ready: list[bytes] = []
        wake: list[asyncio.Future[None]] = []  # the sender's waiter, when it waits

        def wake_sender() -> None:
            if wake and not wake[0].done():
                wake[0].set_result(None)

        drained = asyncio.Event()

        async def produce() -> None:
            async for chunk in self.body_iterator:
                ready.append(chunk if isinstance(chunk, bytes) else _bytes(chunk, self.charset))
                wake_sender()
                if len(ready) > _HIGH_WATER_EVENTS:  # a slow client slows the upstream, as before
                    drained.clear()
                    await drained.wait()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = loop.create_task(produce())
        producer.add_done_callback(lambda _: wake_sender())  # also when cancelled before it ever ran
        watcher = loop.create_task(watch())
        watcher.add_done_callback(lambda _: producer.cancel())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            body = b""
            while ready or not producer.done():
                if ready:
                    body = ready[0] if len(ready) == 1 else b"".join(ready)
                    ready.clear()
                    if producer.done():
                        break  # the last batch: it goes out with the end of the stream, in one write
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    drained.set()
                    body = b""
                    continue
                wake[:] = [loop.create_future()]
                await wake[0]
            if not watcher.done():
                failed = _failure(producer) is not None  # then the stream stays unterminated
                if body or not failed:
                    await send({"type": "http.response.body", "body": body, "more_body": failed})
        except OSError:
            pass  # the client went away while we were writing
        finally:
            watcher.cancel()
            producer.cancel()
            await asyncio.gather(watcher, producer, return_exceptions=True)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        if (error := _failure(producer)) is not None:
            raise error  # a bug, not the client: the middleware logs it; the stream stays unterminated


def _failure(producer: asyncio.Task[None]) -> BaseException | None:
    """What the body iterator raised, if anything but the client going away (an OSError)."""
    if not producer.done() or producer.cancelled():
        return None
    error = producer.exception()
    return None if isinstance(error, OSError) else error


def _bytes(chunk: str | memoryview, charset: str) -> bytes:
    return chunk.encode(charset) if isinstance(chunk, str) else bytes(chunk)
