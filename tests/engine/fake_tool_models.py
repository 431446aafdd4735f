"""Fake model servers (OpenAI, Anthropic, Ollama shapes) that use a tool, on loopback in a thread.

Each records every request body it receives (`calls`) and plays one scripted model: while the
conversation holds no tool result it asks for `get_weather({"city": "Paris"})`, in its provider's
own shape, streamed or not as asked; once a tool result is there it answers `ANSWER` in text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fake_models import free_port, serve_in_thread

ANSWER = "It is 21C in Paris."
ARGUMENTS = {"city": "Paris"}
CALL_ID = "call_weather_1"  # what the fake OpenAI and Anthropic models name their tool call
ARGUMENTS_PARTS = ['{"ci', 'ty": "Pa', 'ris"}']  # the arguments as a stream delivers them


@dataclass
class ToolUpstream:
    port: int
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


def _stream(frames: list[bytes], media_type: str = "text/event-stream") -> StreamingResponse:
    async def body():
        for frame in frames:
            yield frame

    return StreamingResponse(body(), media_type=media_type)


async def _recorded(fake: ToolUpstream, request: Request) -> dict[str, Any]:
    body = await request.json()
    fake.calls.append(body)
    return body


def openai_routes(fake: ToolUpstream) -> list[Route]:
    async def completions(request: Request) -> Response:
        body = await _recorded(fake, request)
        answered = any(m.get("role") == "tool" for m in body["messages"])
        usage = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
        call = {
            "id": CALL_ID,
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(ARGUMENTS)},
        }
        if not body.get("stream"):
            message = (
                {"role": "assistant", "content": ANSWER}
                if answered
                else {"role": "assistant", "content": None, "tool_calls": [call]}
            )
            choice = {"index": 0, "message": message, "finish_reason": "stop" if answered else "tool_calls"}
            return JSONResponse(
                {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice], "usage": usage}
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        if answered:
            frames = [chunk({"role": "assistant", "content": ANSWER}), chunk({}, "stop")]
        else:
            head = {**call, "index": 0, "function": {"name": "get_weather", "arguments": ""}}
            frames = [chunk({"role": "assistant", "content": None, "tool_calls": [head]})]
            frames += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in ARGUMENTS_PARTS]
            frames.append(chunk({}, "tool_calls"))
        frames += [_sse({"choices": [], "usage": usage}), _sse("[DONE]")]
        return _stream(frames)

    return [Route("/v1/chat/completions", completions, methods=["POST"])]


def _has_tool_result(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m.get("content"), list) and any(b.get("type") == "tool_result" for b in m["content"])
        for m in messages
    )


def anthropic_routes(fake: ToolUpstream) -> list[Route]:
    async def messages(request: Request) -> Response:
        body = await _recorded(fake, request)
        answered = _has_tool_result(body["messages"])
        tool_use = {"type": "tool_use", "id": CALL_ID, "name": "get_weather", "input": ARGUMENTS}
        blocks = (
            [{"type": "text", "text": ANSWER}] if answered else [{"type": "text", "text": "Let me check."}, tool_use]
        )
        stop = "end_turn" if answered else "tool_use"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "msg",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": blocks,
                    "stop_reason": stop,
                    "usage": {"input_tokens": 30, "output_tokens": 9},
                }
            )
        frames = [
            _sse(
                {"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1}}},
                "message_start",
            )
        ]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                frames.append(
                    _sse(
                        {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                        "content_block_start",
                    )
                )
                delta = {"type": "text_delta", "text": block["text"]}
                frames.append(
                    _sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
                )
            else:
                start = {**block, "input": {}}
                frames.append(
                    _sse({"type": "content_block_start", "index": index, "content_block": start}, "content_block_start")
                )
                for part in ARGUMENTS_PARTS:
                    delta = {"type": "input_json_delta", "partial_json": part}
                    frames.append(
                        _sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
                    )
            frames.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        frames += [
            _sse(
                {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}},
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]
        return _stream(frames)

    return [Route("/v1/messages", messages, methods=["POST"])]


def ollama_routes(fake: ToolUpstream) -> list[Route]:
    async def chat(request: Request) -> Response:
        body = await _recorded(fake, request)
        answered = any(m.get("role") == "tool" for m in body["messages"])
        final = {"model": body["model"], "done": True, "done_reason": "stop", "prompt_eval_count": 40, "eval_count": 6}
        if answered:
            message = {"role": "assistant", "content": ANSWER}
        else:
            message = {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": ARGUMENTS}}],
            }
        if not body.get("stream", True):
            return JSONResponse({**final, "message": message})
        lines = [
            {"model": body["model"], "message": message, "done": False},
            {**final, "message": {"role": "assistant", "content": ""}},
        ]
        return _stream([(json.dumps(line) + "\n").encode() for line in lines], "application/x-ndjson")

    return [Route("/api/chat", chat, methods=["POST"])]


ROUTES = {"openai": openai_routes, "anthropic": anthropic_routes, "ollama": ollama_routes}


def start_tool_upstream(kind: str):
    """(fake, server, thread) for a fake `kind` model on a free loopback port."""
    fake = ToolUpstream(port=free_port())
    server, thread = serve_in_thread(ROUTES[kind](fake), fake.port)
    return fake, server, thread
