"""An upstream failure's words stay in the engine's log: the model's internal address (host:port,
named by every connection error) and whatever an upstream's error says never reach a client, on
any door (REST, SSE before and after the first chunk, the OpenAI API, WebSocket frames)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from websockets.sync.client import connect

from assistantctl.engine.settings import ChannelSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_models import free_port, serve_in_thread

CHAT, STREAM, COMPLETIONS = "/api/v1/chat", "/api/v1/chat/stream", "/v1/chat/completions"


def _frame(ws: Any) -> dict[str, Any]:
    while True:
        frame = json.loads(ws.recv(timeout=10))
        if frame["type"] != "ping":
            return frame


def _anthropic_failing_mid_stream() -> tuple[int, Any]:
    """An Anthropic-shaped upstream that streams a word, then an error event naming an internal host."""

    async def messages(request: Request) -> Response:
        await request.body()

        async def events() -> Any:
            yield b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n'
            yield (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":"Hel"}}\n\n'
            )
            await asyncio.sleep(0.05)
            yield b'event: error\ndata: {"type":"error","error":{"message":"backend 10.20.30.40:8443 overloaded"}}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    port = free_port()
    server, _ = serve_in_thread([Route("/v1/messages", messages, methods=["POST"])], port)
    return port, server


@pytest.fixture(scope="module")
def leaky(module_dir: Path) -> Iterator[tuple[RunningEngine, str, str]]:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: every call is a connection error
    port, server = _anthropic_failing_mid_stream()
    models = [
        model("gone", "openai", model="gpt-x", api_base=f"http://{dead}/v1", api_key_secret="k"),
        model("flaky", "anthropic", model="claude-x", api_base=f"http://127.0.0.1:{port}", api_key_secret="k"),
    ]
    running = start_engine(
        module_dir / "leaky", models, secrets={"k": "sk"}, retries=0, channels=[ChannelSettings(name="websocket")]
    )
    yield running, dead, "10.20.30.40:8443"
    stop_engine(running)
    server.should_exit = True


def test_upstream_addresses_never_reach_a_client_but_stay_in_the_log(leaky: tuple[RunningEngine, str, str]) -> None:
    engine, dead, internal = leaky
    with engine.client() as client:
        answers = [
            client.post(CHAT, json={"message": "hi"}),
            client.post(STREAM, json={"message": "hi"}),
            client.post(COMPLETIONS, json={"messages": [{"role": "user", "content": "hi"}]}),
            client.post(COMPLETIONS, json={"stream": True, "messages": [{"role": "user", "content": "hi"}]}),
            client.post(STREAM, json={"message": "hi", "model": "flaky"}),
            client.post(
                COMPLETIONS, json={"model": "flaky", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            ),
        ]
    with connect(engine.url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=5) as ws:
        frames = []
        for client_id, name in (("w1", "gone"), ("w2", "flaky")):
            ws.send(json.dumps({"type": "chat", "id": client_id, "message": "hi", "model": name}))
            frames.append(_frame(ws))
            while frames[-1]["type"] == "chunk":
                frames.append(_frame(ws))
    assert [a.status_code for a in answers[:4]] == [502, 502, 502, 502]
    assert answers[4].status_code == answers[5].status_code == 200  # failed after the first word
    assert '"error"' in answers[4].text and '"error"' in answers[5].text
    assert [f["code"] for f in frames if f["type"] == "error"] == ["upstream_error", "upstream_error"]
    port, internal_port = dead.rsplit(":")[1], internal.rsplit(":")[1]
    for text in [*(a.text for a in answers), *(json.dumps(f) for f in frames)]:
        assert port not in text and internal_port not in text and "10.20.30.40" not in text, text
    engine.log_lines(dead)
    log = "\n".join(engine.log_lines(internal))
    assert dead in log and internal in log  # the operator still learns what went wrong
