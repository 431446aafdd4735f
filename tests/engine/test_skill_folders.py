"""Skill folders (skills/<name>/{handler.py, config.yaml}) in a real engine process: a command
answers without a model call on /api/v1/chat, its SSE stream and the websocket; the model calls
`skill_<name>` through the tool loop; a raising or hanging skill is contained; `load_handler`
says in one sentence what is wrong with a handler; two handlers with the same internal names stay
apart; a changed skill is a restart field. The folders are under tests/engine/skill_folders/."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fake_tool_models import ToolUpstream
from test_webhooks import SECRETS, tg_post, tg_update
from test_webhooks import channels as webhook_channels
from websockets.sync.client import connect

from assistantctl.engine.settings import (
    ChannelSettings,
    EngineSettings,
    SkillFolderSettings,
    ToolsSettings,
    restart_fields,
)
from assistantctl.engine.skills.folders import BaseSkill, SkillLoadError, load_handler, load_skill_folders
from engine_process import RunningEngine, build_settings, model, start_engine, stop_engine
from fake_loop_model import plan

FOLDERS = Path(__file__).parent / "skill_folders"


def folder_settings(name: str, root: Path = FOLDERS, **overrides: Any) -> SkillFolderSettings:
    """What the compiler renders for a folder: its config.yaml, its path and digest."""
    folder = root / name
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    values = {"name": name, "path": str(folder), "digest": digest.hexdigest()}
    values |= yaml.safe_load((folder / "config.yaml").read_text()) | overrides
    return SkillFolderSettings(**values)


@pytest.fixture(scope="module")
def engine(module_dir: Path, loop_model: ToolUpstream) -> Iterator[RunningEngine]:
    running = start_engine(
        module_dir / "skills",
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets={"k": "sk-test"},
        tools=ToolsSettings(enabled=["calculator"], step_timeout_seconds=5),
        channels=[ChannelSettings(name="websocket", path="/ws")],
        skill_folders=[folder_settings(name) for name in ("weather", "echo", "pair", "boom", "hang", "quiet")],
    )
    yield running
    stop_engine(running)


def post(engine: RunningEngine, message: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{engine.url}/api/v1/chat", json={"message": message, **body}, timeout=20)


def chat(engine: RunningEngine, message: str, **body: Any) -> dict[str, Any]:
    response = post(engine, message, **body)
    assert response.status_code == 200, response.text
    return response.json()


def sse(engine: RunningEngine, message: str) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{engine.url}/api/v1/chat/stream", json={"message": message}, timeout=20) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def ws(engine: RunningEngine, message: str) -> dict[str, Any]:
    with connect(engine.url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=5) as socket:
        socket.send(json.dumps({"type": "chat", "id": f"m{time.monotonic_ns()}", "message": message}))
        while True:
            frame = json.loads(socket.recv(timeout=20))
            if frame["type"] in ("done", "error"):
                return frame


def test_a_command_answers_without_a_model_call_and_is_stored(engine, loop_model) -> None:
    before, calls = (
        len(loop_model.calls),
        engine.metric("assistant_tool_calls_total", tool="skill_weather", outcome="ok"),
    )
    response = post(engine, "/weather   Paris ")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == "weather: Paris: sunny (imperial) for anonymous on web"
    assert body["model"] == "skill:weather"
    assert len(loop_model.calls) == before
    history = httpx.get(f"{engine.url}/api/v1/history", params={"conversation_id": body["conversation_id"]}).json()
    stored = [(m["role"], m["content"]) for m in history["messages"]]
    assert ("user", "/weather   Paris ") in stored and ("assistant", body["reply"]) in stored
    assert engine.metric("assistant_tool_calls_total", tool="skill_weather", outcome="ok") == calls + 1
    request_id = response.headers["x-request-id"]
    lines = [line for line in engine.log_lines(request_id, "command /weather") if request_id in line]
    assert any("command /weather" in line and "skill=weather" in line and "outcome=ok" in line for line in lines)
    assert any("tool=skill_weather" in line for line in lines)  # call_tool's own line


def test_a_command_answers_on_the_sse_stream_and_the_websocket(engine, loop_model) -> None:
    before = len(loop_model.calls)
    events = sse(engine, "/weather Oslo")
    assert "".join(e.get("delta", "") for e in events) == "weather: Oslo: sunny (imperial) for anonymous on web"
    assert events[-1]["done"] is True and events[-1]["model"] == "skill:weather"
    frame = ws(engine, "/echo hi there")
    assert frame["type"] == "done", frame
    assert (frame["reply"], frame["model"]) == ("echo: hi there", "skill:echo")
    assert len(loop_model.calls) == before


def test_command_text_fills_the_arguments(engine) -> None:
    assert chat(engine, "/echo  several words, kept ")["reply"] == "echo: several words, kept"
    assert chat(engine, "/echo")["reply"] == "echo: "
    assert chat(engine, '/pair {"left": "a", "right": 7}')["reply"] == "a=7"
    for message in ("/pair a 7", '/pair {"right": "x"}', "/weather"):
        response = post(engine, message)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_arguments"
        expected = "city" if message == "/weather" else "left"
        assert expected in error["message"] and message.split()[0] in error["message"]


def test_a_message_that_does_not_start_with_a_command_goes_to_the_model(engine, loop_model) -> None:
    before = len(loop_model.calls)
    assert chat(engine, "what does /weather do?")["model"] == "planner"
    assert chat(engine, "/weatherman Paris")["model"] == "planner"
    assert len(loop_model.calls) == before + 2


def test_the_model_calls_a_skill_through_the_tool_loop(engine, loop_model) -> None:
    body = chat(engine, plan([("skill_weather", {"city": "Rome"}), ("skill_quiet", {"text": "x"})]))
    assert body["reply"] == (
        "results: weather: Rome: sunny (imperial) for anonymous on web | quiet saw 1 user message(s), request True, x"
    )
    assert [(t["name"], t["outcome"]) for t in body["tools"]] == [("skill_weather", "ok"), ("skill_quiet", "ok")]
    offered = {t["function"]["name"]: t["function"] for t in loop_model.calls[-1]["tools"]}
    assert {"calculator", "skill_weather", "skill_quiet", "skill_pair"} <= set(offered)
    assert "skill_echo" not in offered  # tool: false
    assert offered["skill_weather"]["description"] == "The weather for a city."
    assert offered["skill_weather"]["parameters"]["required"] == ["city"]


def test_a_raising_or_hanging_skill_is_contained(engine, loop_model) -> None:
    for message, words in (("/boom", "failed"), ("/hang", "did not finish within 0.5")):
        response = post(engine, message)
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "skill_failed" and words in error["message"]
        assert "secret internals" not in error["message"]
    body = chat(engine, plan([("skill_boom", {}), ("skill_hang", {})]))
    assert {t["name"]: t["outcome"] for t in body["tools"]} == {"skill_boom": "error", "skill_hang": "timeout"}
    assert "did not finish within 0.5 seconds" in body["reply"]
    assert engine.metric("assistant_tool_calls_total", tool="skill_hang", outcome="timeout") >= 2
    # On the stream a command fails before the first chunk: an ordinary JSON error.
    response = httpx.post(f"{engine.url}/api/v1/chat/stream", json={"message": "/boom"}, timeout=20)
    assert (response.status_code, response.json()["error"]["code"]) == (502, "skill_failed")
    frame = ws(engine, "/hang")
    assert (frame["type"], frame["code"]) == ("error", "skill_failed"), frame


def test_a_command_answers_on_a_channel_webhook(engine_factory, platforms) -> None:
    platforms.reset()
    running = engine_factory(
        [model("local")],
        secrets=SECRETS,
        channels=webhook_channels(platforms.url),
        skill_folders=[folder_settings("weather")],
    )
    assert tg_post(running, tg_update(701, 1001, "/weather Lima")).status_code == 200
    (call,) = platforms.wait_for("telegram", 1)
    assert call["body"] == {"chat_id": 1001, "text": "weather: Lima: sunny (imperial) for telegram:1001 on telegram"}
    platforms.reset()
    assert tg_post(running, tg_update(702, 1001, "/weather")).status_code == 200
    (call,) = platforms.wait_for("telegram", 1)
    assert call["body"]["text"] == "/weather expects `/weather <city>`; city: Field required"


def test_two_handlers_with_the_same_internal_names_stay_apart() -> None:
    weather, echo = load_handler(FOLDERS / "weather"), load_handler(FOLDERS / "echo")
    assert weather.__name__ == echo.__name__ == "Handler"
    assert weather is not echo and weather.__module__ != echo.__module__
    assert issubclass(weather, BaseSkill) and weather.Arguments.model_fields.keys() == {"city"}
    assert echo.Arguments.model_fields.keys() == {"text"}
    assert weather(weather.Config()).config.units == "metric"
    assert not list((FOLDERS / "weather").glob("__pycache__"))  # loading writes nothing into the folder


def write_handler(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "skill"
    folder.mkdir()
    (folder / "handler.py").write_text(source)
    return folder


HEAD = "from assistantctl.engine.skills import BaseSkill\n"
CASES = {
    "syntax": ("x = 1\ndef broken(:\n", ["handler.py", "handler.py:2:", "SyntaxError"]),
    "import": ("x = 1\nimport no_such_module_here\n", ["handler.py", "handler.py:2:", "no_such_module_here"]),
    "none": (HEAD + "class Plain:\n    pass\n", ["handler.py", "no subclass of BaseSkill"]),
    "two": (
        HEAD + "class A(BaseSkill):\n    async def execute(self, c): return ''\n"
        "class B(BaseSkill):\n    async def execute(self, c): return ''\n",
        ["handler.py", "2 subclasses of BaseSkill", "A, B"],
    ),
    "sync": (HEAD + "class A(BaseSkill):\n    def execute(self, c): return ''\n", ["handler.py", "async def execute"]),
    "abstract": (HEAD + "class A(BaseSkill):\n    pass\n", ["handler.py", "async def execute"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_handler_says_what_is_wrong_in_one_sentence(tmp_path, case) -> None:
    source, words = CASES[case]
    with pytest.raises(SkillLoadError) as raised:
        load_handler(write_handler(tmp_path, source))
    message = str(raised.value)
    assert all(word in message for word in words), message
    assert "\n" not in message


def test_load_handler_without_a_handler_file(tmp_path) -> None:
    with pytest.raises(SkillLoadError, match=r"skill.*handler\.py"):
        load_handler(tmp_path)


def test_a_config_that_does_not_fit_the_skill_is_a_start_up_error_naming_it(tmp_path) -> None:
    with pytest.raises(ValueError, match="skill 'weather'.*units"):
        load_skill_folders([folder_settings("weather", config={"units": ["not", "a", "string"]})])
    with pytest.raises(ValueError, match="skill 'echo'.*unexpected"):
        load_skill_folders([folder_settings("echo", config={"unexpected": 1})])


def test_a_changed_skill_is_a_restart_field(tmp_path) -> None:
    models = [model("planner")]
    old = build_settings(tmp_path, 1, models, skill_folders=[folder_settings("weather")])
    new = old.model_copy(update={"skill_folders": [folder_settings("weather", digest="0" * 64)]})
    assert restart_fields(old, new) == ["skill_folders"]
    assert restart_fields(old, EngineSettings.model_validate_json(old.to_json())) == []
