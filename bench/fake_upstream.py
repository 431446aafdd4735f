"""An instant OpenAI-compatible upstream for benchmarks: `python bench/fake_upstream.py 9100`.

POST /v1/chat/completions answers at once (JSON, or SSE with a few chunks when "stream": true);
GET /v1/models lists one model. aiohttp keeps the upstream itself from being the bottleneck.
"""

from __future__ import annotations

import json
import sys

from aiohttp import web

WORDS = ["This", " is", " the", " fake", " upstream", "."]


def _usage(body: dict) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {"prompt_tokens": prompt, "completion_tokens": len(WORDS), "total_tokens": prompt + len(WORDS)}


def _chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body.get("model", "fake")
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}
                ],
                "usage": _usage(body),
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in WORDS:
        await response.write(_chunk(model, {"content": word}))
    await response.write(_chunk(model, {}, "stop"))
    usage = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [],
        "usage": _usage(body),
    }
    await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9100
    import uvloop

    web.run_app(make_app(), host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())
