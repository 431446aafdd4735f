"""The assistant's own API: chat, streamed chat (SSE) and paginated history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..history.sqlite import ConversationNotFound, Row, new_id, tool_rows
from ..jsonio import JSONResponse
from ..models.adapters.base import Message
from ..models.router import ModelStream, Trace
from ..pipeline import (
    StreamEnd,
    admit,
    chat_with_tools,
    check_model,
    in_flight,
    new_trace,
    open_stream,
    options,
    relay_deltas,
    relay_with_tools,
    runtime,
    tool_loop,
)
from ..runtime import Runtime
from ..tools.loop import ToolLoop
from .bodies import chat_request, read_json
from .history import whose
from .sse import EventStreamResponse, event

CHANNEL = "web"  # the channel name tool permissions use for this API
_MAX_PAGE = 200


def _body_limit(rt: Runtime) -> int:
    return max(1 << 20, rt.settings.max_message_chars * 4 + 4096)


async def _prepare(request: Request) -> tuple[Runtime, Trace, object, str, list[Message]]:
    rt = runtime(request)
    req = chat_request(await read_json(request, _body_limit(rt)), rt.settings.max_message_chars)
    user = await admit(request, rt, req.user, model=req.model)
    check_model(rt.catalog, req.model)
    conversation_id = req.conversation_id or new_id()
    try:
        context = await rt.history.context(conversation_id, user, rt.settings.history_context_messages)
    except ConversationNotFound:
        raise ApiError(404, "unknown_conversation", "no such conversation for this user") from None
    return rt, new_trace(request, user), req, conversation_id, [*context, {"role": "user", "content": req.message}]


def _rows(
    trace: Trace,
    conversation_id: str,
    question: str,
    answer: str,
    model: str,
    tokens: int,
    loop: ToolLoop | None = None,
) -> list[Row]:
    """The turn's rows: the question, the tool loop's messages if any, the answer (last)."""
    rows = [Row(new_id(), conversation_id, trace.user, "user", question)]
    if loop is not None and loop.added:
        rows += tool_rows(conversation_id, trace.user, loop.added, model)
    rows.append(Row(new_id(), conversation_id, trace.user, "assistant", answer, model, tokens))
    return rows


async def chat(request: Request) -> Response:
    rt, trace, req, conversation_id, messages = await _prepare(request)
    catalog = rt.catalog  # this request stays on this catalog even if the default switches meanwhile
    loop = tool_loop(rt, catalog, req.model, trace, req.priority, CHANNEL)
    async with in_flight(rt):
        model, reply = await chat_with_tools(
            rt, catalog, req.model, messages, options(trace), trace, req.priority, loop, channel=CHANNEL
        )
    rows = _rows(trace, conversation_id, req.message, reply.text, model, reply.usage.output_tokens, loop)
    await rt.history.append(rows)
    body = {
        "reply": reply.text,
        "model": model,
        "conversation_id": conversation_id,
        "message_id": rows[-1].id,
        "usage": reply.usage.as_dict(),
        "tool_calls": reply.tool_calls,
    }
    if loop is not None:
        body["finish_reason"] = reply.finish_reason
        body["tools"] = loop.summaries
        if loop.sent:
            body["sent"] = loop.sent
    return JSONResponse(body)


async def chat_stream(request: Request) -> Response:
    rt, trace, req, conversation_id, messages = await _prepare(request)
    catalog = rt.catalog
    deadline = asyncio.get_running_loop().time() + rt.settings.request_timeout_seconds
    loop = tool_loop(rt, catalog, req.model, trace, req.priority, CHANNEL)
    opts = options(trace)
    async with in_flight(rt):
        # Errors before the first chunk are ordinary JSON errors with a status code.
        first = loop.options(opts) if loop is not None else opts
        stream = await open_stream(
            rt, catalog, req.model, messages, first, trace, req.priority, deadline, channel=CHANNEL
        )
    if loop is None:
        return EventStreamResponse(_relay(rt, stream, trace, conversation_id, req.message, deadline))
    end = StreamEnd()
    relay = relay_with_tools(rt, catalog, req.model, messages, opts, trace, req.priority, deadline, end, loop, stream)
    return EventStreamResponse(_relay_tools(rt, relay, end, loop, trace, conversation_id, req.message))


async def _relay(
    rt: Runtime, stream: ModelStream, trace: Trace, conversation_id: str, question: str, deadline: float
) -> AsyncIterator[bytes]:
    end = StreamEnd()
    async with aclosing(relay_deltas(rt, stream, deadline, end)) as deltas:
        async for batch in deltas:
            yield b"".join(event({"delta": delta}) for delta in batch)
    if end.error is not None:
        yield event({"error": {"code": "upstream_error", "message": end.error}, "done": True})
        return
    rows = _rows(trace, conversation_id, question, stream.text, stream.model, stream.usage.output_tokens)
    await rt.history.append(rows)
    yield _done(rows, stream.model, conversation_id, stream.finish_reason, stream.usage.as_dict())


async def _relay_tools(
    rt: Runtime,
    relay: AsyncIterator[list[str] | dict],
    end: StreamEnd,
    loop: ToolLoop,
    trace: Trace,
    conversation_id: str,
    question: str,
) -> AsyncIterator[bytes]:
    """As `_relay`, with a `{"tool": {...}}` event per tool call start and end between the steps
    (and `{"tool": {"event": "sent", "text": ...}}` for what the send_message tool sends)."""
    async with aclosing(relay) as items:
        async for item in items:
            if isinstance(item, dict):
                yield event({"tool": item})
                while loop.sent:
                    yield event({"tool": {"event": "sent", "text": loop.sent.pop(0)}})
            else:
                yield b"".join(event({"delta": delta}) for delta in item)
    if end.error is not None:
        code = "timeout" if end.timeout else "upstream_error"
        yield event({"error": {"code": code, "message": end.error}, "done": True})
        return
    stream, usage = end.stream, loop.usage
    reply = loop.final_text(stream.text, end.stopped)
    rows = _rows(trace, conversation_id, question, reply, stream.model, usage.output_tokens, loop)
    await rt.history.append(rows)
    finish = "max_steps" if end.stopped else stream.finish_reason
    yield _done(rows, stream.model, conversation_id, finish, usage.as_dict())


def _done(rows: list[Row], model: str, conversation_id: str, finish_reason: str, usage: dict) -> bytes:
    return event(
        {
            "done": True,
            "model": model,
            "conversation_id": conversation_id,
            "message_id": rows[-1].id,
            "finish_reason": finish_reason,
            "usage": usage,
        }
    )


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_param", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_param", f"{name} must be from {low} to {high}")
    return value


async def history(request: Request) -> Response:
    rt = runtime(request)
    user = await whose(request, rt, request.query_params.get("user") or None)  # an admin may name anyone
    limit = _int_param(request, "limit", 50, 1, _MAX_PAGE)
    items, next_before = await rt.history.page(
        user, request.query_params.get("conversation_id") or None, limit, request.query_params.get("before") or None
    )
    return JSONResponse({"user": user, "messages": items, "next_before": next_before})
