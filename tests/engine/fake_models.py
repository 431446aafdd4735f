"""Tiny fake model servers (OpenAI, Anthropic, Ollama shapes) run in a thread on loopback.

A test steers one through `FakeUpstream.behaviour` (fail the next N calls, hang, stream slowly)
and reads back what it received (`calls`: path, headers, body).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

WORDS = ["Hello", " from", " the", " fake", " upstream"]


@dataclass
class Behaviour:
    fail_next: int = 0  # answer this many calls with `fail_status`
    fail_status: int = 500
    hang: bool = False  # never answer (until the client gives up)
    chunk_delay: float = 0.0  # seconds between streamed chunks
    stream_chunks: int = len(WORDS)


@dataclass
class FakeUpstream:
    port: int
    behaviour: Behaviour = field(default_factory=Behaviour)
    calls: list[dict[str, Any]] = field(default_factory=list)
    streams_closed: int = 0
    streams_finished: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.calls.clear()
        self.streams_closed = self.streams_finished = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _words(fake: FakeUpstream) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(fake.behaviour.stream_chunks)]


async def _gate(fake: FakeUpstream, request: Request) -> tuple[dict[str, Any], Response | None]:
    body = await request.json()
    fake.calls.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
    b = fake.behaviour
    if b.hang:
        await asyncio.sleep(3600)
    if b.fail_next > 0:
        b.fail_next -= 1
        return body, JSONResponse({"error": {"message": "injected failure"}}, status_code=b.fail_status)
    return body, None


async def _stream(fake: FakeUpstream, frames: list[bytes], media_type: str) -> StreamingResponse:
    async def body():
        try:
            for frame in frames:
                yield frame
                if fake.behaviour.chunk_delay:
                    await asyncio.sleep(fake.behaviour.chunk_delay)
            fake.streams_finished += 1
        finally:
            fake.streams_closed += 1

    return StreamingResponse(body(), media_type=media_type)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


def openai_app(fake: FakeUpstream) -> list[Route]:
    async def completions(request: Request) -> Response:
        body, failed = await _gate(fake, request)
        if failed:
            return failed
        words, model = _words(fake), body["model"]
        usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        frames = [_sse({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}) for w in words]
        frames += [
            _sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            _sse({"choices": [], "usage": usage}),
            _sse("[DONE]"),
        ]
        return await _stream(fake, frames, "text/event-stream")

    return [Route("/v1/chat/completions", completions, methods=["POST"])]


def anthropic_app(fake: FakeUpstream) -> list[Route]:
    async def messages(request: Request) -> Response:
        body, failed = await _gate(fake, request)
        if failed:
            return failed
        words = _words(fake)
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "msg",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": "".join(words)}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 11, "output_tokens": len(words)},
                }
            )
        frames = [
            _sse(
                {"type": "message_start", "message": {"usage": {"input_tokens": 11, "output_tokens": 1}}},
                "message_start",
            ),
            _sse({"type": "content_block_start", "index": 0}, "content_block_start"),
        ]
        frames += [
            _sse(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
                "content_block_delta",
            )
            for w in words
        ]
        frames += [
            _sse(
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(words)}},
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]
        return await _stream(fake, frames, "text/event-stream")

    return [Route("/v1/messages", messages, methods=["POST"])]


def ollama_app(fake: FakeUpstream) -> list[Route]:
    async def chat(request: Request) -> Response:
        body, failed = await _gate(fake, request)
        if failed:
            return failed
        words = _words(fake)
        final = {
            "model": body["model"],
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 13,
            "eval_count": len(words),
        }
        if not body.get("stream", True):
            return JSONResponse({**final, "message": {"role": "assistant", "content": "".join(words)}})
        lines = [
            json.dumps({"model": body["model"], "message": {"role": "assistant", "content": w}, "done": False})
            for w in words
        ]
        lines.append(json.dumps({**final, "message": {"role": "assistant", "content": ""}}))
        return await _stream(fake, [(line + "\n").encode() for line in lines], "application/x-ndjson")

    return [Route("/api/chat", chat, methods=["POST"])]


def start_fake(kind: str) -> tuple[FakeUpstream, uvicorn.Server, threading.Thread]:
    fake = FakeUpstream(port=free_port())
    routes = {"openai": openai_app, "anthropic": anthropic_app, "ollama": ollama_app}[kind](fake)
    server, thread = serve_in_thread(routes, fake.port)
    return fake, server, thread


def serve_in_thread(routes: list[Route], port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """A Starlette app on 127.0.0.1:`port` in a daemon thread, returned once it accepts connections."""
    config = uvicorn.Config(
        Starlette(routes=routes),
        host="127.0.0.1",
        port=port,
        log_level="error",
        loop="asyncio",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    return server, thread
