"""Approvals across engine nodes: the question asked on one node, the answer sent to another.

Two engine processes (two data dirs, one worker each) share a real PostgreSQL for their history,
and so for their approval questions (engine/tools/approval_postgres.py). The fake model's plan
(test_approval.py) reads a web page, which taints the request, then asks for `touch`, a machine
tool that leaves `<data_dir>/touched/<name>` behind on the node that ran it. Node A asks, the
user's answer (a websocket approval frame, or the next "yes" / "no" in the Telegram chat) reaches
node B; the tool runs once, on A, only after a yes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_tool_models import ToolUpstream
from test_approval import (
    PLUGINS,
    approval_states,
    frames_until,
    tainted_then_touch,
    tg_post,
    tg_texts,
    wait_texts,
    ws_connect,
)

from assistantctl.engine.settings import ApprovalSettings, ChannelSettings, SecuritySettings, ToolsSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_platforms import FakePlatforms
from postgres_server import Service

pytestmark = pytest.mark.slow

TIMEOUT = 6.0
BOT_TOKEN, TG_SECRET = "123456:FAKE-BOT-TOKEN", "FAKE-TG-WEBHOOK-SECRET"


def _node(root: Path, pg: Service, loop_model: ToolUpstream, platforms: FakePlatforms) -> RunningEngine:
    secrets = {"k": "sk-test", "pg": pg.url, "tg.bot_token": BOT_TOKEN, "tg.webhook_secret": TG_SECRET}
    return start_engine(
        root,
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets=secrets,
        env={"PYTHONPATH": str(PLUGINS)},
        request_timeout_seconds=30,
        history_backend="postgres",
        history_dsn_secret="pg",
        security=SecuritySettings(),
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


@pytest.fixture(scope="module")
def nodes(
    module_dir: Path, postgres: Service, loop_model: ToolUpstream, platforms: FakePlatforms
) -> Iterator[tuple[RunningEngine, RunningEngine]]:
    started: list[RunningEngine] = []
    try:
        for name in ("node-a", "node-b"):
            started.append(_node(module_dir / "approvals" / name, postgres, loop_model, platforms))
        yield started[0], started[1]
    finally:
        for engine in started:
            stop_engine(engine)


def ran_on(engine: RunningEngine, name: str) -> bool:
    return (engine.root / "data" / "touched" / name).exists()


def ws_ask_on_a_answer_on_b(a: RunningEngine, b: RunningEngine, name: str, approve: bool | None) -> list[dict]:
    """Every frame node A sends up to `done`, the answer (if any) sent to node B, which must take it."""
    with ws_connect(a) as asking:
        asking.send(json.dumps({"type": "chat", "id": f"m-{name}", "message": tainted_then_touch(name)}))
        asked = frames_until(asking, "approval_request", "done", "error")[-1]
        assert asked["type"] == "approval_request", asked
        if approve is not None:
            with ws_connect(b) as answering:
                answering.send(
                    json.dumps({"type": "approval", "approval_id": asked["approval_id"], "approve": approve})
                )
                answering.send(json.dumps({"type": "ping"}))
                (frame,) = frames_until(answering, "pong", "error")
                assert frame["type"] == "pong", frame  # B found the question: no unknown_approval
        return frames_until(asking, "done", "error")


def test_a_websocket_yes_sent_to_another_node_runs_the_tool_once_on_the_asking_node(nodes) -> None:
    a, b = nodes
    frames = ws_ask_on_a_answer_on_b(a, b, "ws-yes", approve=True)
    assert frames[-1]["type"] == "done" and frames[-1]["reply"].endswith("| touched ws-yes"), frames[-1]
    assert approval_states(frames) == ["asked", "approved"]
    assert ran_on(a, "ws-yes") and not ran_on(b, "ws-yes")


def test_a_websocket_no_sent_to_another_node_keeps_the_tool_from_running(nodes) -> None:
    a, b = nodes
    frames = ws_ask_on_a_answer_on_b(a, b, "ws-no", approve=False)
    assert frames[-1]["reply"].endswith("| error: 'touch' was not run: the user declined"), frames[-1]
    assert approval_states(frames) == ["asked", "declined"]
    assert not ran_on(a, "ws-no") and not ran_on(b, "ws-no")


def test_an_unanswered_question_times_out_and_a_late_answer_on_another_node_finds_nothing(nodes) -> None:
    a, b = nodes
    with ws_connect(a) as asking:
        asking.send(json.dumps({"type": "chat", "id": "m-ws-late", "message": tainted_then_touch("ws-late")}))
        asked = frames_until(asking, "approval_request")[-1]
        frames = frames_until(asking, "done", "error")
    assert frames[-1]["reply"].endswith(f"| error: 'touch' was not run: the user gave no answer within {TIMEOUT:g} s")
    assert approval_states(frames) == ["asked", "timeout"]
    with ws_connect(b) as answering:
        answering.send(json.dumps({"type": "approval", "approval_id": asked["approval_id"], "approve": True}))
        (frame,) = frames_until(answering, "error")
        assert frame["code"] == "unknown_approval"
    time.sleep(0.3)
    assert not ran_on(a, "ws-late") and not ran_on(b, "ws-late")


@pytest.mark.parametrize(("user_id", "answer"), [(3001, "yes"), (3002, "no")])
def test_a_telegram_answer_that_reaches_another_node_answers_the_question(nodes, platforms, user_id, answer) -> None:
    a, b = nodes
    name = f"tg-{user_id}"
    tg_post(a, user_id * 10, user_id, tainted_then_touch(name))
    (question,) = wait_texts(platforms, user_id, 1)
    assert question.startswith(f'Run touch with {{"name": "{name}"}}? Reply yes or no')
    tg_post(b, user_id * 10 + 1, user_id, answer)
    texts = wait_texts(platforms, user_id, 2)
    if answer == "yes":
        assert texts[1].endswith(f"| touched {name}") and ran_on(a, name)
    else:
        assert texts[1].endswith("| error: 'touch' was not run: the user declined") and not ran_on(a, name)
    time.sleep(0.3)
    assert len(tg_texts(platforms, user_id)) == 2  # B's "yes" was an answer, not a chat turn of its own
    assert not ran_on(b, name)
