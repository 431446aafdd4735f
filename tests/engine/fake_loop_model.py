"""A fake OpenAI-compatible model that follows a tool plan written in the user's message.

The user's last message is `PLAN:` and a JSON list of steps, each step a list of
`[tool name, arguments]` calls: while steps are left (and the request offers tools, with
tool_choice other than "none") the model asks for the next step's calls at once, ids
`call_<step>_<n>`; then it answers `results: <each tool result after the message, joined by
" | ">`. Streamed, each call's arguments come in two pieces and the calls' pieces interleave,
keyed by index, as OpenAI's stream delivers parallel calls. Every request body is in `calls`.
"""

from __future__ import annotations

import json
from typing import Any

from fake_tool_models import ToolUpstream
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fake_models import free_port, serve_in_thread

USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


def plan(*steps: list[tuple[str, dict[str, Any]]]) -> str:
    return "PLAN:" + json.dumps([[list(call) for call in step] for step in steps])


def _turn(messages: list[dict[str, Any]]) -> tuple[list[Any], int, list[str]]:
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    text = messages[last_user]["content"]
    steps = json.loads(text[5:]) if text.startswith("PLAN:") else []
    after = messages[last_user + 1 :]
    done = sum(1 for m in after if m["role"] == "assistant" and m.get("tool_calls"))
    return steps, done, [m["content"] for m in after if m["role"] == "tool"]


def _sse(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return _sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def routes(fake: ToolUpstream) -> list[Route]:
    async def completions(request: Request) -> Response:
        body = await request.json()
        fake.calls.append(body)
        steps, done, results = _turn(body["messages"])
        offered = bool(body.get("tools")) and body.get("tool_choice") != "none"
        calls = []
        if offered and done < len(steps):
            calls = [
                {
                    "id": f"call_{done}_{n}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for n, (name, args) in enumerate(steps[done])
            ]
        text = None if calls else "results: " + " | ".join(results)
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
            return JSONResponse({"id": "x", "object": "chat.completion", "choices": [choice], "usage": USAGE})
        frames = []
        if calls:
            for n, call in enumerate(calls):
                head = {
                    "index": n,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"]},
                }
                frames.append(_chunk({"tool_calls": [{**head, "function": {**head["function"], "arguments": ""}}]}))
            for half in (0, 1):  # every call's first half, then every call's second half
                for n, call in enumerate(calls):
                    arguments = call["function"]["arguments"]
                    middle = len(arguments) // 2
                    piece = arguments[:middle] if half == 0 else arguments[middle:]
                    frames.append(_chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]}))
            frames.append(_chunk({}, "tool_calls"))
        else:
            words = text.split(" ")
            frames += [_chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
            frames.append(_chunk({}, "stop"))
        frames += [_sse({"choices": [], "usage": USAGE}), _sse("[DONE]")]

        async def stream():
            for frame in frames:
                yield frame

        return StreamingResponse(stream(), media_type="text/event-stream")

    return [Route("/v1/chat/completions", completions, methods=["POST"])]


def start_loop_model():
    """(fake, server, thread): the plan-following model on a free loopback port."""
    fake = ToolUpstream(port=free_port())
    server, thread = serve_in_thread(routes(fake), fake.port)
    return fake, server, thread
