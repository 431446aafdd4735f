"""Human approval of machine tools (engine/tools/approval.py) through a real engine process.

A fake model follows a plan (fake_loop_model.py): it reads a web page (`web_text`, whose answer
is marked as from the network) and then asks for `touch`, a machine tool that leaves a file
behind (tests/engine/approval_tools/sitecustomize.py). The request is then tainted, so under the
default policy `touch` waits for the user's yes: over the websocket (an approval_request frame,
answered by an approval frame) and over Telegram (a question message, answered by the user's next
"yes" or "no", with two workers so that the answer may reach the other one). Declined, unanswered
or asked where the channel cannot ask (the REST API), the tool never runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_tool_models import ToolUpstream
from websockets.sync.client import ClientConnection, connect

from assistantctl.engine.settings import ApprovalSettings, ChannelSettings, SecuritySettings, ToolsSettings
from assistantctl.engine.tools.approval import answer_of, carries_taint
from engine_process import RunningEngine, model, start_engine, stop_engine, written_lines
from fake_loop_model import plan
from fake_platforms import FakePlatforms

PLUGINS = Path(__file__).parent / "approval_tools"
TIMEOUT = 5.0
BOT_TOKEN, TG_SECRET = "123456:FAKE-BOT-TOKEN", "FAKE-TG-WEBHOOK-SECRET"
SECRETS = {"k": "sk-test", "tg.bot_token": BOT_TOKEN, "tg.webhook_secret": TG_SECRET}


def tainted_then_touch(name: str) -> str:
    return plan([("web_text", {})], [("touch", {"name": name})])


@pytest.fixture(scope="module")
def engine(module_dir: Path, loop_model: ToolUpstream, platforms: FakePlatforms) -> Iterator[RunningEngine]:
    running = start_engine(
        module_dir / "approval",
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets=SECRETS,
        env={"PYTHONPATH": str(PLUGINS)},
        workers=2,
        request_timeout_seconds=30,
        security=SecuritySettings(audit_log=str(module_dir / "approval" / "logs" / "audit.log")),
        tools=ToolsSettings(enabled=["web_text", "touch"], approval=ApprovalSettings(timeout_seconds=TIMEOUT)),
        channels=[
            ChannelSettings(name="websocket", path="/ws"),
            ChannelSettings(
                name="telegram",
                path="/webhooks/telegram",
                secrets={"bot_token": "tg.bot_token", "webhook_secret": "tg.webhook_secret"},
                api_base=platforms.url,
            ),
        ],
    )
    yield running
    stop_engine(running)


def touched(engine: RunningEngine, name: str) -> bool:
    return (engine.root / "data" / "touched" / name).exists()


# --- websocket ------------------------------------------------------------------------------------


def ws_connect(engine: RunningEngine) -> ClientConnection:
    return connect(engine.url.replace("http://", "ws://") + "/ws", proxy=None, open_timeout=5)


def frames_until(socket: ClientConnection, *kinds: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(socket.recv(timeout=20))
        if frame["type"] == "ping":
            continue
        frames.append(frame)
        if frame["type"] in kinds:
            return frames


def ws_round_trip(engine: RunningEngine, name: str, approve: bool | None) -> tuple[dict, list[dict]]:
    """(the approval_request frame, every frame up to done) for one tainted request."""
    with ws_connect(engine) as socket:
        socket.send(json.dumps({"type": "chat", "id": f"m-{name}", "message": tainted_then_touch(name)}))
        asked = frames_until(socket, "approval_request", "done", "error")[-1]
        assert asked["type"] == "approval_request", asked
        if approve is not None:
            socket.send(json.dumps({"type": "approval", "approval_id": asked["approval_id"], "approve": approve}))
        return asked, frames_until(socket, "done", "error")


def approval_states(frames: list[dict[str, Any]]) -> list[str]:
    return [f["state"] for f in frames if f["type"] == "tool" and f.get("event") == "approval"]


def test_websocket_approved_machine_tool_runs(engine) -> None:
    asked, frames = ws_round_trip(engine, "ws-yes", approve=True)
    assert asked["tool"] == "touch" and asked["arguments"] == {"name": "ws-yes"}
    assert asked["id"] == "m-ws-yes" and asked["timeout_seconds"] == TIMEOUT
    assert asked["text"].startswith('Run touch with {"name": "ws-yes"}? Reply yes or no')
    assert frames[-1]["type"] == "done" and frames[-1]["reply"].endswith("| touched ws-yes")
    assert approval_states(frames) == ["asked", "approved"]
    assert touched(engine, "ws-yes")


def test_websocket_declined_machine_tool_does_not_run(engine) -> None:
    _, frames = ws_round_trip(engine, "ws-no", approve=False)
    assert frames[-1]["type"] == "done"
    assert frames[-1]["reply"].endswith("| error: 'touch' was not run: the user declined")
    assert approval_states(frames) == ["asked", "declined"]
    assert not touched(engine, "ws-no")


def test_websocket_unanswered_approval_times_out_and_the_tool_does_not_run(engine) -> None:
    _, frames = ws_round_trip(engine, "ws-silent", approve=None)
    assert frames[-1]["reply"].endswith(f"| error: 'touch' was not run: the user gave no answer within {TIMEOUT:g} s")
    assert approval_states(frames) == ["asked", "timeout"]
    lines = written_lines(engine.root / "logs" / "audit.log", '"tool_approval"', '"timeout"')
    assert not touched(engine, "ws-silent")
    audited = [json.loads(line) for line in lines if '"tool_approval"' in line]
    states = [entry["state"] for entry in audited if entry["tool"] == "touch" and entry["channel"] == "websocket"]
    assert "asked" in states and "timeout" in states


def test_a_late_or_unknown_answer_is_refused(engine) -> None:
    with ws_connect(engine) as socket:
        socket.send(json.dumps({"type": "approval", "approval_id": "nosuch", "approve": True}))
        (frame,) = frames_until(socket, "error")
        assert frame["code"] == "unknown_approval"


# --- channels that cannot ask, and untainted requests ---------------------------------------------


def test_a_tainted_request_on_the_rest_api_cannot_run_a_machine_tool(engine) -> None:
    response = httpx.post(f"{engine.url}/api/v1/chat", json={"message": tainted_then_touch("rest")}, timeout=20)
    assert response.status_code == 200, response.text
    reply = response.json()["reply"]
    assert "error: 'touch' needs the user's approval (this request has read text from the network)" in reply
    assert "and the web channel cannot ask for it" in reply
    time.sleep(0.3)
    assert not touched(engine, "rest")


def test_an_untainted_request_runs_a_machine_tool_without_asking(engine) -> None:
    response = httpx.post(f"{engine.url}/api/v1/chat", json={"message": plan([("touch", {"name": "clean"})])})
    assert response.json()["reply"] == "results: touched clean"
    assert touched(engine, "clean")


# --- telegram, two workers ------------------------------------------------------------------------


def tg_post(engine: RunningEngine, update_id: int, user_id: int, text: str) -> None:
    sender = {"id": user_id, "is_bot": False, "first_name": "Test"}
    message = {"message_id": update_id, "from": sender, "chat": {"id": user_id, "type": "private"}, "date": 1}
    body = {"update_id": update_id, "message": {**message, "text": text}}
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    response = httpx.post(f"{engine.url}/webhooks/telegram", json=body, headers=headers, timeout=10)
    assert response.status_code == 200


def tg_texts(platforms: FakePlatforms, user_id: int) -> list[str]:
    return [c["body"]["text"] for c in platforms.of("telegram") if c["body"]["chat_id"] == user_id]


def wait_texts(platforms: FakePlatforms, user_id: int, count: int) -> list[str]:
    deadline = time.monotonic() + 15
    while len(tg_texts(platforms, user_id)) < count:
        assert time.monotonic() < deadline, tg_texts(platforms, user_id)
        time.sleep(0.05)
    return tg_texts(platforms, user_id)


@pytest.mark.parametrize(("user_id", "answer"), [(2001, "yes"), (2002, "No")])
def test_telegram_asks_in_the_chat_and_the_next_yes_or_no_answers(engine, platforms, user_id, answer) -> None:
    name = f"tg-{user_id}"
    tg_post(engine, user_id * 10, user_id, tainted_then_touch(name))
    (question,) = wait_texts(platforms, user_id, 1)
    assert question.startswith(f'Run touch with {{"name": "{name}"}}? Reply yes or no')
    assert not touched(engine, name)
    tg_post(engine, user_id * 10 + 1, user_id, answer)  # either worker may take it
    texts = wait_texts(platforms, user_id, 2)
    if answer == "yes":
        assert texts[1].endswith(f"| touched {name}") and touched(engine, name)
    else:
        assert texts[1].endswith("| error: 'touch' was not run: the user declined") and not touched(engine, name)
    time.sleep(0.3)
    assert len(tg_texts(platforms, user_id)) == 2  # the answer started no chat turn of its own


def test_telegram_unanswered_question_times_out_and_the_tool_does_not_run(engine, platforms) -> None:
    tg_post(engine, 20030, 2003, tainted_then_touch("tg-silent"))
    texts = wait_texts(platforms, 2003, 2)
    assert texts[1].endswith(f"| error: 'touch' was not run: the user gave no answer within {TIMEOUT:g} s")
    assert not touched(engine, "tg-silent")
    tg_post(engine, 20031, 2003, "yes")  # too late: a chat turn like any other, nothing runs
    wait_texts(platforms, 2003, 3)
    assert not touched(engine, "tg-silent")


# --- units ----------------------------------------------------------------------------------------


def test_a_conversation_with_a_result_of_a_tool_not_known_safe_is_tainted() -> None:
    def turn(call_id: str, name: str) -> list[dict[str, Any]]:
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
        return [{"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": call_id}]

    def safe(name: str) -> bool:
        return name == "calculator"

    assert not carries_taint([{"role": "user", "content": "hi"}, *turn("a", "calculator")], safe)
    assert carries_taint([*turn("a", "calculator"), *turn("b", "http_fetch")], safe)
    assert carries_taint([{"role": "tool", "tool_call_id": "orphan"}], safe)  # its call fell out of the window


def test_only_a_plain_yes_or_no_answers_a_question() -> None:
    assert [answer_of(t) for t in ("yes", " Yes. ", "y", "no", "No!", "deny")] == [True] * 3 + [False] * 3
    assert answer_of("yes please run rm -rf") is None and answer_of("what?") is None


def test_telegram_polling_question_is_answered_by_the_next_message(module_dir, loop_model, platforms) -> None:
    # The question is asked while its own update's batch is still being answered: the poller must
    # see the "yes" before that batch ends (it is answered at once, out of its chat's queue).
    polled = start_engine(
        module_dir / "approval-polling",
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets=SECRETS,
        env={"PYTHONPATH": str(PLUGINS)},
        request_timeout_seconds=30,
        tools=ToolsSettings(enabled=["web_text", "touch"], approval=ApprovalSettings(timeout_seconds=10)),
        channels=[
            ChannelSettings(
                name="telegram",
                secrets={"bot_token": "tg.bot_token"},
                options={"mode": "polling"},
                api_base=platforms.url,
            )
        ],
    )
    try:
        user_id, name = 2101, "tg-polled"
        platforms.bot.push(tg_update(21010, user_id, tainted_then_touch(name)))
        (question,) = wait_texts(platforms, user_id, 1)
        assert question.startswith(f'Run touch with {{"name": "{name}"}}? Reply yes or no')
        platforms.bot.push(tg_update(21011, user_id, "yes"))
        texts = wait_texts(platforms, user_id, 2)
        assert texts[1].endswith(f"| touched {name}") and touched(polled, name)
        time.sleep(0.5)
        assert len(tg_texts(platforms, user_id)) == 2  # the answer started no chat turn of its own
    finally:
        stop_engine(polled)


def tg_update(update_id: int, user_id: int, text: str) -> dict:
    sender = {"id": user_id, "is_bot": False, "first_name": "Test"}
    message = {"message_id": update_id, "from": sender, "chat": {"id": user_id, "type": "private"}, "date": 1}
    return {"update_id": update_id, "message": {**message, "text": text}}
