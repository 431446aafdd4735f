"""A fake OpenAI-compatible model for the web page's tests: it streams the user's last message back
word by word (so a test controls the reply's text, Markdown and hostile markup included), as slowly
as `delay` says, and counts streams that ended early (the client went away) apart from finished ones."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))  # the engine tests' fake model helpers
from fake_models import free_port, serve_in_thread  # noqa: E402


@dataclass
class Echo:
    port: int
    delay: float = 0.0  # seconds before each streamed piece
    hang: bool = False  # accept the call, then send nothing
    calls: int = 0
    streams_closed: int = 0  # every stream that ended, finished or not
    streams_finished: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.delay, self.hang = 0.0, False
        self.calls = self.streams_closed = self.streams_finished = 0


def _sse(data: object) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _routes(echo: Echo) -> list[Route]:
    async def completions(request: Request) -> Response:
        body = await request.json()
        echo.calls += 1
        last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        pieces = re.findall(r"\s*\S+", last if isinstance(last, str) else json.dumps(last))

        async def stream():
            try:
                if echo.hang:
                    await asyncio.sleep(3600)
                for piece in pieces:
                    await asyncio.sleep(echo.delay)
                    yield _sse({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                yield _sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                yield _sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(pieces)}})
                yield b"data: [DONE]\n\n"
                echo.streams_finished += 1
            finally:
                echo.streams_closed += 1

        return StreamingResponse(stream(), media_type="text/event-stream")

    return [Route("/v1/chat/completions", completions, methods=["POST"])]


def start_echo() -> tuple[Echo, uvicorn.Server, threading.Thread]:
    echo = Echo(port=free_port())
    server, thread = serve_in_thread(_routes(echo), echo.port)
    return echo, server, thread
