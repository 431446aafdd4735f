"""The builtin offline model uses the engine's tools with the default settings, so a tool works
with no API key: through a real engine process, "what is 6*7?" goes through the calculator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine_process import RunningEngine, model, start_engine, stop_engine


@pytest.fixture(scope="module")
def engine(module_dir: Path) -> Iterator[RunningEngine]:
    running = start_engine(module_dir / "builtin-tools", [model("local")])
    yield running
    stop_engine(running)


def test_builtin_model_answers_arithmetic_through_the_calculator(engine: RunningEngine) -> None:
    before = engine.metric("assistant_tool_calls_total", tool="calculator", outcome="ok")
    body = httpx.post(f"{engine.url}/api/v1/chat", json={"message": "what is 6*7?"}, timeout=10).json()
    assert body["reply"] == "6*7 = 42"
    assert [(t["name"], t["outcome"]) for t in body["tools"]] == [("calculator", "ok")]
    assert engine.metric("assistant_tool_calls_total", tool="calculator", outcome="ok") == before + 1


def test_builtin_model_asks_the_clock_for_a_city_on_the_stream(engine: RunningEngine) -> None:
    with httpx.stream(
        "POST", f"{engine.url}/api/v1/chat/stream", json={"message": "What time is it in Tokyo?"}, timeout=10
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    tools = [e["tool"] for e in events if "tool" in e]
    assert [(t["event"], t["name"]) for t in tools] == [("started", "current_time"), ("finished", "current_time")]
    text = "".join(e["delta"] for e in events if "delta" in e)
    assert text.startswith("The time in Asia/Tokyo is ") and "+09:00" in text
    assert events[-1]["done"] is True


def test_builtin_model_still_echoes_what_needs_no_tool(engine: RunningEngine) -> None:
    body = httpx.post(f"{engine.url}/api/v1/chat", json={"message": "hello there"}, timeout=10).json()
    assert body["reply"].startswith('You said: "hello there". I am the builtin offline model')
    assert body["tools"] == []
