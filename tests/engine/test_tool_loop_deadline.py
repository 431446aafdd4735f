"""/api/v1/chat's tool loop keeps the request's deadline: the model calls and the tool steps
together end within request_timeout_seconds, each step being well within step_timeout_seconds
(engine/pipeline.py `chat_with_tools`). A real engine process, the fake model that follows a tool
plan, and the test tool `slow` (0.3 s, tests/engine/tool_plugins/sitecustomize.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_tool_models import ToolUpstream

from assistantctl.engine.settings import ToolsSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_loop_model import plan

PLUGINS = Path(__file__).parent / "tool_plugins"


@pytest.fixture(scope="module")
def engine(module_dir: Path, loop_model: ToolUpstream) -> Iterator[RunningEngine]:
    running = start_engine(
        module_dir / "deadline",
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets={"k": "sk-test"},
        env={"PYTHONPATH": str(PLUGINS)},
        tools=ToolsSettings(enabled=["slow"], max_steps=10, step_timeout_seconds=5),
        request_timeout_seconds=1,
    )
    yield running
    stop_engine(running)


def test_tool_steps_that_outlast_the_request_timeout_end_the_request_with_504(engine) -> None:
    started = time.monotonic()
    steps = [[("slow", {"text": str(n)})] for n in range(9)]  # 9 x 0.3 s, one after the other
    response = httpx.post(f"{engine.url}/api/v1/chat", json={"message": plan(*steps)}, timeout=20)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "timeout"
    assert time.monotonic() - started < len(steps) * 0.3  # ended by the deadline, not after every step


def test_steps_within_the_request_timeout_reach_the_answer(engine) -> None:
    response = httpx.post(f"{engine.url}/api/v1/chat", json={"message": plan([("slow", {"text": "a"})])}, timeout=20)
    assert response.status_code == 200, response.text
    assert [t["outcome"] for t in response.json()["tools"]] == ["ok"]
