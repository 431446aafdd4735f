"""Replies that outlive the connection that asked for them: the websocket channel's idempotent chat.

A chat message carries a client message id. The first time a user's id is seen, this worker
claims it in the history store (`ClientMessages`) and generates the reply in a task of its own, so
a client that drops mid-reply does not stop the model; the reply is stored under the claimed
message id. Whoever asks for the same id later gets that one reply:

- on this worker while it is being generated: the chunks so far, the rest live, then `done`;
- anywhere once it is stored: a replayed `done` frame, no model call;
- on another worker while this one generates: it polls the store until the reply is there (or
  the claim is released after a failure, then it tries itself, or the claim went silent because
  its worker died, then it takes the claim over).

The worker that holds a claim renews it every `_RENEW_SECONDS` while it generates, however long
the reply takes; a claim silent for `_SILENT_SECONDS` belongs to a worker that died (killed, its
host gone), and a re-send takes it over then, not after the request deadline.

The frames produced here are the websocket protocol's `chunk`, `tool`, `done` and `error` (see
api_ws). With tools (engine/tools/loop.py) the engine runs the model's tool calls between steps
and stores them in the history with the reply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from .. import logs
from ..errors import ApiError
from ..history.sqlite import ClientMessage, ConversationNotFound, Row, new_id, tool_rows
from ..models.router import Trace
from ..pipeline import StreamEnd, in_flight, open_stream, options, relay_deltas, relay_with_tools, tool_loop
from ..runtime import Runtime
from ..tools.approval import Question, arguments_object
from ..tools.loop import ToolLoop
from .bodies import ChatRequest

CHANNEL = "websocket"
Frame = dict[str, Any]
FOLLOW_FRAMES = ("chunk", "tool", "approval_request")  # the frames before a reply's `done` or `error`
_POLL_SECONDS = 0.1
_RENEW_SECONDS = 2.0
# Five missed renewals: a worker whose event loop stalls that long is as good as dead to its users.
_SILENT_SECONDS = 10.0


def done_frame(client_id: str, record: ClientMessage, replayed: bool) -> Frame:
    return {
        "type": "done",
        "id": client_id,
        "reply": record.reply,
        "conversation_id": record.conversation_id,
        "message_id": record.message_id,
        "model": record.model,
        "replayed": replayed,
    }


def cancelled_frame(client_id: str) -> Frame:
    return {"type": "cancelled", "id": client_id}


def error_frame(client_id: str | None, code: str, message: str, **extra: Any) -> Frame:
    return {"type": "error", "id": client_id, "code": code, "message": message, **extra}


class Job:
    """One client message id being answered on this worker; any number of connections follow it."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.chunks: list[Frame] = []  # every chunk and tool frame so far, for late followers
        self.seq = 0
        self.outcome: Frame | None = None
        self.cancelled = False  # a client's cancel frame stopped it (not a shutdown)
        self.storing = False  # the reply is complete and being written: too late to cancel
        self._followers: set[asyncio.Queue[Frame]] = set()

    def follow(self) -> asyncio.Queue[Frame]:
        """A queue that gets every chunk from the first one on, then the `done` or `error` frame."""
        queue: asyncio.Queue[Frame] = asyncio.Queue()
        for frame in self.chunks:
            queue.put_nowait(frame)
        if self.outcome is not None:
            queue.put_nowait(self.outcome)
        else:
            self._followers.add(queue)
        return queue

    def unfollow(self, queue: asyncio.Queue[Frame]) -> None:
        self._followers.discard(queue)

    def chunk(self, delta: str) -> None:
        self._emit({"type": "chunk", "id": self.client_id, "seq": self.seq, "delta": delta})
        self.seq += 1

    async def ask(self, question: Question) -> None:
        """An approval question (engine/tools/approval.py) to whoever follows this id; kept with
        the chunks, so a client that reconnects and follows the id again sees it too."""
        self._emit(
            {
                "type": "approval_request",
                "id": self.client_id,
                "approval_id": question.id,
                "tool": question.tool,
                "arguments": arguments_object(question.arguments),
                "timeout_seconds": question.timeout_seconds,
                "text": question.text(),
            }
        )

    def tool(self, event: dict[str, Any]) -> None:
        """A tool call started or ended (engine/tools/loop.py), or a send_message text."""
        self._emit({"type": "tool", "id": self.client_id, **event})

    def finish(self, frame: Frame) -> None:
        self.outcome = frame
        self._emit(frame)
        self._followers.clear()

    def _emit(self, frame: Frame) -> None:
        if frame["type"] in FOLLOW_FRAMES:
            self.chunks.append(frame)
        for queue in self._followers:
            queue.put_nowait(frame)


class Replies:
    """This worker's jobs, keyed by (user, client message id)."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], tuple[Job, asyncio.Task[None]]] = {}

    def answer(self, rt: Runtime, user: str, client_id: str, req: ChatRequest, model: str | None) -> Job:
        """The job answering `client_id` for `user`, started if this worker has none yet."""
        key = (user, client_id)
        if key in self._jobs:
            return self._jobs[key][0]
        job = Job(client_id)
        task = asyncio.create_task(self._run(rt, user, job, req, model))
        self._jobs[key] = (job, task)
        task.add_done_callback(lambda _: self._jobs.pop(key, None))
        return job

    def cancel(self, user: str, client_id: str) -> bool:
        """Stop the reply to `client_id` of `user` on this worker; False when none is running here.
        The model call is cancelled (its HTTP stream closed), nothing is stored, the claim is
        released (a re-send of the id starts over) and followers get a `cancelled` frame. A reply
        already being stored is left to finish (True: its `done` frame follows): cancelling the
        write could store the reply and still release its claim."""
        running = self._jobs.get((user, client_id))
        if running is None or running[0].outcome is not None:
            return False
        if running[0].storing:
            return True
        running[0].cancelled = True
        running[1].cancel()
        return True

    async def close(self, grace: float) -> None:
        """On shutdown: let running replies finish for up to `grace` seconds, then cancel them
        (a cancelled job releases its claim, so a re-send elsewhere starts over at once)."""
        tasks = [task for _, task in self._jobs.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self, rt: Runtime, user: str, job: Job, req: ChatRequest, model: str | None) -> None:
        conversation_id, message_id = req.conversation_id or new_id(), new_id()
        try:
            claimed = await self._claim(rt, user, job, conversation_id, message_id)
        except asyncio.CancelledError:
            # Stopped while claiming or waiting for another worker: drop the claim if it became ours.
            await asyncio.shield(_release(rt, user, job.client_id, message_id))
            if not job.cancelled:
                raise
            job.finish(cancelled_frame(job.client_id))
            return
        if claimed is not None:
            await self._generate(rt, user, job, req, model, *claimed)

    async def _claim(
        self, rt: Runtime, user: str, job: Job, conversation_id: str, message_id: str
    ) -> tuple[str, str] | None:
        """Claim the id, or wait for whoever holds it; the (conversation, message) ids to generate
        under, or None when the job is finished already (replayed, or the store failed)."""
        store = rt.history.client_messages
        try:
            record = await store.claim(user, job.client_id, conversation_id, message_id)
            while record is not None:  # someone claimed it first: wait for their reply
                if record.reply is not None:
                    job.finish(done_frame(job.client_id, record, replayed=True))
                    return None
                conversation_id = record.conversation_id
                if record.silent_seconds > _SILENT_SECONDS and await store.take_over(
                    user, job.client_id, record.message_id, message_id, _SILENT_SECONDS
                ):
                    break
                await asyncio.sleep(_POLL_SECONDS)
                record = await store.get(user, job.client_id)
                if record is None:  # released after a failure: this re-send tries again
                    record = await store.claim(user, job.client_id, conversation_id, message_id)
        except Exception as exc:  # noqa: BLE001 - the store failing must reach the client as an error frame
            logs.event(logs.APP, logging.ERROR, f"websocket reply store failed: {exc}")
            job.finish(error_frame(job.client_id, "internal", "the history store failed, retry later"))
            return None
        return conversation_id, message_id

    async def _generate(
        self,
        rt: Runtime,
        user: str,
        job: Job,
        req: ChatRequest,
        model: str | None,
        conversation_id: str,
        message_id: str,
    ) -> None:
        """Call the model once for a claimed id; store the reply, or release the claim on failure."""
        try:
            async with _renewing(rt, user, job.client_id, message_id):
                outcome = await self._stream(rt, user, job, req, model, conversation_id, message_id)
        except ApiError as exc:
            outcome = error_frame(job.client_id, exc.code, exc.message)
        except ConversationNotFound:
            outcome = error_frame(job.client_id, "unknown_conversation", "no such conversation for this user")
        except asyncio.CancelledError:  # shutdown: a re-send (here after a restart, or elsewhere) starts over
            await asyncio.shield(_release(rt, user, job.client_id, message_id))
            if job.cancelled:  # the user's stop: nothing stored, the task ends normally
                job.finish(cancelled_frame(job.client_id))
                return
            job.finish(error_frame(job.client_id, "unavailable", "the engine is shutting down, re-send the message"))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not leave followers waiting forever
            logs.APP.exception("websocket reply failed", extra={"fields": {"user": user}})
            outcome = error_frame(
                job.client_id, "internal", f"internal error, see the engine log ({type(exc).__name__})"
            )
        if outcome["type"] == "error":  # nothing stored: a re-send starts over
            await _release(rt, user, job.client_id, message_id)
        job.finish(outcome)

    async def _stream(
        self,
        rt: Runtime,
        user: str,
        job: Job,
        req: ChatRequest,
        model: str | None,
        conversation_id: str,
        message_id: str,
    ) -> Frame:
        context = await rt.history.context(conversation_id, user, rt.settings.history_context_messages)
        messages = [*context, {"role": "user", "content": req.message}]
        trace = Trace(request_id=os.urandom(8).hex(), user=user, started=time.monotonic())
        catalog = rt.catalog
        deadline = asyncio.get_running_loop().time() + rt.settings.request_timeout_seconds
        loop = tool_loop(rt, catalog, model, trace, req.priority, CHANNEL, ask=job.ask)
        opts = options(trace)
        async with in_flight(rt):
            first = loop.options(opts) if loop is not None else opts
            stream = await open_stream(
                rt, catalog, model, messages, first, trace, req.priority, deadline, channel=CHANNEL
            )
        end = StreamEnd()
        if loop is None:
            relay = relay_deltas(rt, stream, deadline, end)
        else:
            relay = relay_with_tools(
                rt, catalog, model, messages, opts, trace, req.priority, deadline, end, loop, stream
            )
        async with aclosing(relay) as items:
            async for item in items:
                if isinstance(item, dict):
                    job.tool(item)
                    while loop is not None and loop.sent:
                        job.tool({"event": "sent", "text": loop.sent.pop(0)})
                    continue
                for delta in item:
                    job.chunk(delta)
        if end.error is not None:
            return error_frame(job.client_id, "timeout" if end.timeout else "upstream_error", end.error)
        text, answered_by, tokens = _answer(stream, end, loop)
        rows = [Row(new_id(), conversation_id, user, "user", req.message)]
        if loop is not None and loop.added:
            rows += tool_rows(conversation_id, user, loop.added, answered_by)
        rows.append(Row(message_id, conversation_id, user, "assistant", text, answered_by, tokens))
        job.storing = True
        await rt.history.append(rows)
        record = ClientMessage(job.client_id, conversation_id, message_id, 0.0, text, answered_by)
        return done_frame(job.client_id, record, replayed=False)


def _answer(stream: Any, end: StreamEnd, loop: ToolLoop | None) -> tuple[str, str, int]:
    """The reply's text, model and output tokens: the last step's, with a tool loop's whole usage."""
    if loop is None:
        return stream.text, stream.model, stream.usage.output_tokens
    last = end.stream
    return loop.final_text(last.text, end.stopped), last.model, loop.usage.output_tokens


@asynccontextmanager
async def _renewing(rt: Runtime, user: str, client_id: str, message_id: str) -> AsyncIterator[None]:
    """Renew the claim every _RENEW_SECONDS while the block runs: followers see a live holder."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(_RENEW_SECONDS)
            try:
                await rt.history.client_messages.renew(user, client_id, message_id)
            except Exception as exc:  # noqa: BLE001 - followers may take over: one more model call, no loss
                logs.event(logs.APP, logging.WARNING, f"websocket claim not renewed: {exc}")

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()


async def _release(rt: Runtime, user: str, client_id: str, message_id: str) -> None:
    try:
        await rt.history.client_messages.release(user, client_id, message_id)
    except Exception as exc:  # noqa: BLE001 - the claim then goes stale and is taken over later
        logs.event(logs.APP, logging.WARNING, f"websocket claim not released: {exc}")
