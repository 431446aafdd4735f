"""The engine's own tool loop through a real engine process: a fake OpenAI-compatible model asks
for tools (one, several at once, a chain), the engine runs them and drives the model to its
answer on /api/v1/chat, its SSE stream and the websocket; failing tools are contained, max_steps
holds, the history keeps the tool messages, /metrics counts the calls. The test tools (hang,
boom, slow, huge) come from tests/engine/tool_plugins/sitecustomize.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_tool_models import ToolUpstream
from websockets.sync.client import connect

from assistantctl.engine.settings import ChannelSettings, ToolsSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_loop_model import plan

PLUGINS = Path(__file__).parent / "tool_plugins"
SIX_BY_SEVEN = ("calculator", {"expression": "6*7"})
TOKYO = ("current_time", {"timezone": "Asia/Tokyo"})


@pytest.fixture(scope="module")
def engine(module_dir: Path, loop_model: ToolUpstream) -> Iterator[RunningEngine]:
    tools = ToolsSettings(
        enabled=["calculator", "current_time", "hang", "boom", "slow", "huge"],
        max_steps=3,
        step_timeout_seconds=1,
        output_limit_bytes=1000,
    )
    running = start_engine(
        module_dir / "loop",
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets={"k": "sk-test"},
        env={"PYTHONPATH": str(PLUGINS)},
        tools=tools,
        channels=[ChannelSettings(name="websocket", path="/ws")],
    )
    yield running
    stop_engine(running)


def chat(engine: RunningEngine, message: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{engine.url}/api/v1/chat", json={"message": message, **body}, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


def sse(engine: RunningEngine, message: str) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{engine.url}/api/v1/chat/stream", json={"message": message}, timeout=20) as response:
        assert response.status_code == 200
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def ws(engine: RunningEngine, message: str) -> list[dict[str, Any]]:
    frames = []
    with connect(engine.url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=5) as socket:
        socket.send(json.dumps({"type": "chat", "id": f"m{time.monotonic_ns()}", "message": message}))
        while True:
            frame = json.loads(socket.recv(timeout=20))
            if frame["type"] == "ping":
                continue
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


def tool_messages(loop_model: ToolUpstream) -> list[dict[str, Any]]:
    return [m for m in loop_model.calls[-1]["messages"] if m["role"] == "tool"]


def test_one_tool_call_runs_and_the_model_answers_with_its_result(engine, loop_model) -> None:
    body = chat(engine, plan([SIX_BY_SEVEN]))
    assert body["reply"] == "results: 42"
    assert [(t["event"], t["name"], t["outcome"]) for t in body["tools"]] == [("finished", "calculator", "ok")]
    assert body["tools"][0]["call_id"] == "call_0_0"
    sent = loop_model.calls[-1]
    assert {t["function"]["name"] for t in sent["tools"]} >= {"calculator", "current_time"}
    assert tool_messages(loop_model) == [{"role": "tool", "tool_call_id": "call_0_0", "content": "42"}]
    asked = [m for m in sent["messages"] if m.get("tool_calls")]
    assert asked[0]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}


def test_parallel_calls_run_at_once_and_answer_in_call_order(engine, loop_model) -> None:
    texts = "abcdefgh"
    step = [*(("slow", {"text": t}) for t in texts), SIX_BY_SEVEN]
    started = time.monotonic()
    body = chat(engine, plan(step))
    # Eight 0.3 s tools one after another take 2.4 s at the least; side by side, a fraction of it.
    assert time.monotonic() - started < len(texts) * 0.3
    assert body["reply"] == "results: " + " | ".join(f"slow done {t}" for t in texts) + " | 42"
    assert [m["tool_call_id"] for m in tool_messages(loop_model)] == [f"call_0_{n}" for n in range(len(texts) + 1)]


def test_a_chain_of_steps_reaches_the_final_answer(engine, loop_model) -> None:
    before = len(loop_model.calls)
    body = chat(engine, plan([SIX_BY_SEVEN], [("calculator", {"expression": "42+1"})], [TOKYO]))
    assert body["reply"].startswith("results: 42 | 43 | ")
    assert "+09:00" in body["reply"]
    assert len(loop_model.calls) - before == 4  # three steps, then the answer


def test_failing_tools_become_errors_for_the_model_not_a_failed_request(engine, loop_model) -> None:
    body = chat(engine, plan([("hang", {}), ("boom", {}), ("huge", {}), ("nosuch", {}), SIX_BY_SEVEN]))
    outcomes = {t["name"]: t["outcome"] for t in body["tools"]}
    assert outcomes == {
        "hang": "timeout",
        "boom": "error",
        "huge": "too_large",
        "nosuch": "unknown_tool",
        "calculator": "ok",
    }
    assert {t["event"] for t in body["tools"] if t["name"] != "calculator"} == {"failed"}
    results = [m["content"] for m in tool_messages(loop_model)]
    assert results[0].startswith("error: 'hang' did not finish within 1 seconds")
    assert results[1] == "error: 'boom' failed with an internal error"
    assert "more than the limit of 1000" in results[2]
    assert results[4] == "42"


def test_max_steps_ends_with_a_call_without_tools(engine, loop_model) -> None:
    body = chat(engine, plan(*[[SIX_BY_SEVEN]] * 5))
    assert len(body["tools"]) == 3  # tools.max_steps
    assert loop_model.calls[-1]["tool_choice"] == "none"
    assert body["reply"] == "results: 42 | 42 | 42"


def test_history_keeps_the_tool_messages_and_the_conversation_goes_on(engine, loop_model) -> None:
    first = chat(engine, plan([SIX_BY_SEVEN]))
    second = chat(engine, "and now?", conversation_id=first["conversation_id"])
    sent = loop_model.calls[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["tool_calls"][0]["id"] == "call_0_0" and sent[2] == {
        "role": "tool",
        "tool_call_id": "call_0_0",
        "content": "42",
    }
    assert sent[3] == {"role": "assistant", "content": "results: 42"}
    assert second["reply"] == "results: "
    page = httpx.get(f"{engine.url}/api/v1/history", params={"conversation_id": first["conversation_id"]}).json()
    assert [m["role"] for m in reversed(page["messages"])] == [
        "user",
        "tool_calls",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]


def test_sse_stream_assembles_streamed_calls_and_relays_tool_events(engine, loop_model) -> None:
    events = sse(engine, plan([SIX_BY_SEVEN, ("slow", {"text": "x"})], [("boom", {})]))
    tools = [e["tool"] for e in events if "tool" in e]
    assert [(t["event"], t["name"]) for t in tools[:2]] == [("started", "calculator"), ("started", "slow")]
    assert {(t["event"], t["name"], t.get("outcome")) for t in tools[2:4]} == {
        ("finished", "calculator", "ok"),
        ("finished", "slow", "ok"),
    }
    assert [(t["event"], t["name"], t["outcome"]) for t in tools[5:]] == [("failed", "boom", "error")]
    assert all(t["duration_ms"] >= 0 and "preview" in t for t in tools if t["event"] != "started")
    text = "".join(e["delta"] for e in events if "delta" in e)
    assert text == "results: 42 | slow done x | error: 'boom' failed with an internal error"
    assert events[-1]["done"] is True and events[-1]["finish_reason"] == "stop"
    assert [m["content"] for m in tool_messages(loop_model)][:2] == ["42", "slow done x"]


def test_websocket_relays_tool_frames_and_the_answer(engine) -> None:
    frames = ws(engine, plan([SIX_BY_SEVEN]))
    tools = [f for f in frames if f["type"] == "tool"]
    assert [(f["event"], f["name"]) for f in tools] == [("started", "calculator"), ("finished", "calculator")]
    assert frames[-1]["type"] == "done" and frames[-1]["reply"] == "results: 42"


def test_metrics_count_the_tool_calls(engine) -> None:
    before = engine.metric("assistant_tool_calls_total", tool="calculator", outcome="ok")
    chat(engine, plan([SIX_BY_SEVEN, SIX_BY_SEVEN]))
    assert engine.metric("assistant_tool_calls_total", tool="calculator", outcome="ok") == before + 2
