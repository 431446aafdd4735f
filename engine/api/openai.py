"""OpenAI-compatible surface: POST /v1/chat/completions (plain and streamed) and GET /v1/models.

Stateless like OpenAI's API: the client sends the whole conversation, nothing is stored.
`model` picks a declared model by name; absent or "default" means the current default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..history.sqlite import new_id
from ..jsonio import JSONResponse
from ..models.adapters.base import Chunk, Usage
from ..models.router import ModelStream
from ..pipeline import (
    StreamEnd,
    admit,
    call_model,
    check_model,
    in_flight,
    new_trace,
    open_stream,
    options,
    relay_deltas,
    runtime,
)
from ..runtime import Runtime
from .bodies import completion_request, read_json
from .sse import EventStreamResponse, event


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


async def chat_completions(request: Request) -> Response:
    rt = runtime(request)
    max_chars = rt.settings.max_message_chars
    req = completion_request(await read_json(request, max(1 << 20, max_chars * 4 * 16)), max_chars)
    model = None if req.model in (None, "default") else req.model
    user = await admit(request, rt, None, model=model)  # OpenAI's `user` labels an end user; it is no identity
    catalog = rt.catalog
    check_model(catalog, model)
    trace = new_trace(request, user)
    opts = options(trace, req.max_tokens, req.temperature, req.extra)
    created = int(time.time())
    completion_id = f"chatcmpl-{new_id()}"
    if req.stream:
        deadline = asyncio.get_running_loop().time() + rt.settings.request_timeout_seconds
        async with in_flight(rt):
            stream = await open_stream(rt, catalog, model, req.messages, opts, trace, req.priority, deadline)
        chunks = _relay(rt, stream, completion_id, created, req.include_usage, deadline)
        return EventStreamResponse(chunks)
    async with in_flight(rt):
        answered_by, reply = await call_model(rt, catalog, model, req.messages, opts, trace, req.priority)
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": answered_by,
            "choices": [
                {
                    "index": 0,
                    "message": _message(reply.text, reply.tool_calls),
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": _usage(reply.usage),
        }
    )


def _message(text: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    if not tool_calls:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": tool_calls}


def _deltas(chunks: list[Chunk]) -> list[dict[str, Any]]:
    """The OpenAI deltas a batch of chunks carries: text, and the tool call pieces."""
    deltas: list[dict[str, Any]] = []
    for chunk in chunks:
        if chunk.delta:
            deltas.append({"content": chunk.delta})
        if chunk.tool_calls:
            deltas.append({"tool_calls": chunk.tool_calls})
    return deltas


def _chunk(completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def _relay(
    rt: Runtime, stream: ModelStream, completion_id: str, created: int, include_usage: bool, deadline: float
) -> AsyncIterator[bytes]:
    model = stream.model
    yield event(_chunk(completion_id, created, model, {"role": "assistant", "content": ""}, None))
    end = StreamEnd()
    async with aclosing(relay_deltas(rt, stream, deadline, end, _deltas)) as deltas:
        async for batch in deltas:
            yield b"".join(event(_chunk(completion_id, created, model, d, None)) for d in batch)
    if end.error is not None:
        yield event({"error": {"message": end.error, "type": "upstream_error", "code": 502}})
        return
    yield event(_chunk(completion_id, created, model, {}, stream.finish_reason))
    if include_usage:
        yield event(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(stream.usage),
            }
        )
    yield event("[DONE]")


async def list_models(request: Request) -> Response:
    rt = runtime(request)
    request.state.user = rt.auth.user(request, None)
    catalog = rt.catalog
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": entry.settings.provider,
                    "default": name == catalog.default,
                }
                for name, entry in catalog.entries.items()
            ],
        }
    )
