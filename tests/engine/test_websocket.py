"""The websocket channel with the real `websockets` client against the real engine on loopback:
heartbeats, streaming, idempotent re-send across reconnects and workers, resume, bad frames, auth."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from assistantctl.engine.settings import RateLimitSettings, SecuritySettings
from engine_process import RunningEngine, StartEngine, as_user, model, stop_engine
from fake_models import FakeUpstream
from ws_client import HEARTBEAT, JWT_KEY, Client, jwt_headers, slow_models, slow_stream, start_ws_engine, ws_channel


@pytest.fixture(scope="module")
def engine(module_dir: Path, openai_fake: FakeUpstream) -> Iterator[RunningEngine]:
    running = start_ws_engine(module_dir / "ws", openai_fake)
    yield running
    stop_engine(running)


def test_server_sends_heartbeat_pings_at_the_configured_interval(engine: RunningEngine) -> None:
    with Client(engine, "hal") as client:
        started = time.monotonic()
        assert client.quiet_for(1.1) == []
        elapsed = time.monotonic() - started
        client.send({"type": "ping"})
        assert client.recv()["type"] == "pong"  # still open: answered pings keep it alive
    assert 2 <= len(client.pings) <= elapsed / HEARTBEAT + 1
    stamps = [p["ts"] for p in client.pings]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # A timer never fires early; a loaded machine may make one late, so the typical gap is what counts.
    assert min(gaps) > HEARTBEAT - 0.05 and abs(statistics.median(gaps) - HEARTBEAT) < 0.05, gaps


def test_a_client_that_misses_heartbeats_is_closed(engine: RunningEngine) -> None:
    started = time.monotonic()
    with connect(engine.url.replace("http://", "ws://") + "/ws", additional_headers=as_user("ida"), proxy=None) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - started < 5:
                assert json.loads(ws.recv(timeout=5))["type"] == "ping"  # never answered
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    assert 3 * HEARTBEAT <= time.monotonic() - started < 3


def test_chat_streams_numbered_chunks_then_done_and_stores_the_turn(engine: RunningEngine) -> None:
    with Client(engine, "sam") as client:
        client.send({"type": "chat", "id": "s-1", "message": "hello over websocket"})
        chunks, done = client.reply("s-1")
    assert [c["seq"] for c in chunks] == list(range(len(chunks))) and len(chunks) > 5
    assert done["type"] == "done" and done["replayed"] is False and done["model"] == "local"
    assert "".join(c["delta"] for c in chunks) == done["reply"]
    assert "hello over websocket" in done["reply"]
    with engine.client() as http:
        history = http.get("/api/v1/history", headers=as_user("sam")).json()["messages"]
    assert history[0]["id"] == done["message_id"] and history[0]["content"] == done["reply"]
    assert history[0]["conversation_id"] == done["conversation_id"]


def test_resend_after_a_reconnect_mid_reply_gets_the_reply_once_from_one_model_call(
    engine: RunningEngine, fresh_openai: FakeUpstream
) -> None:
    full = slow_stream(fresh_openai)
    frame = {"type": "chat", "id": "slow-1", "message": "take your time", "model": "cloud"}
    with Client(engine, "mia") as first:
        first.send(frame)
        assert [first.recv()["seq"], first.recv()["seq"]] == [0, 1]
    with Client(engine, "mia") as second:  # the reply is still being generated
        second.send(frame)
        chunks, done = second.reply("slow-1")
        later = second.quiet_for(0.5)
    assert done["type"] == "done" and done["reply"] == full and done["replayed"] is False
    assert "".join(c["delta"] for c in chunks) == full  # chunks from seq 0, so the client can rebuild
    assert later == []
    assert len(fresh_openai.calls) == 1
    with Client(engine, "mia") as third:  # after it is stored: replayed, still one call
        third.send(frame)
        chunks, replay = third.reply("slow-1")
    assert chunks == [] and replay["replayed"] is True
    assert {k: replay[k] for k in ("reply", "message_id", "conversation_id")} == {
        k: done[k] for k in ("reply", "message_id", "conversation_id")
    }
    assert len(fresh_openai.calls) == 1


def test_the_same_id_from_another_user_is_another_message(engine: RunningEngine) -> None:
    with Client(engine, "una") as una, Client(engine, "vic") as vic:
        una.send({"type": "chat", "id": "same", "message": "from una"})
        vic.send({"type": "chat", "id": "same", "message": "from vic"})
        _, a = una.reply("same")
        _, b = vic.reply("same")
    assert "from una" in a["reply"] and "from vic" in b["reply"] and a["message_id"] != b["message_id"]


def test_resume_replays_the_done_frames_after_the_last_seen_id(engine: RunningEngine) -> None:
    with Client(engine, "rita") as client:
        for n in range(1, 4):
            client.send({"type": "chat", "id": f"r{n}", "message": f"message {n}"})
            client.reply(f"r{n}")
    with Client(engine, "rita") as client:
        client.send({"type": "resume", "last_id": "r1"})
        after_r1 = [client.recv(), client.recv(), client.recv()]
        client.send({"type": "resume", "last_id": None})
        everything = [client.recv() for _ in range(4)]
        client.send({"type": "resume", "last_id": "never-sent"})
        unknown = client.recv()
    assert [(f["type"], f.get("id")) for f in after_r1] == [("done", "r2"), ("done", "r3"), ("resumed", None)]
    assert "message 2" in after_r1[0]["reply"] and after_r1[0]["replayed"] is True
    assert after_r1[2] == {"type": "resumed", "last_id": "r1", "count": 2}
    assert [f.get("id") for f in everything] == ["r1", "r2", "r3", None]
    assert unknown["type"] == "error" and unknown["code"] == "unknown_id"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        (b"\x00\x01", "invalid_frame"),
        ({"type": "shout"}, "unknown_type"),
        ({"type": "chat", "message": "no id"}, "invalid_id"),
        ({"type": "chat", "id": "has space", "message": "x"}, "invalid_id"),
        ({"type": "chat", "id": "m-1"}, "missing_field"),
        ({"type": "chat", "id": "m-2", "message": "   "}, "invalid_field"),
        ({"type": "chat", "id": "m-3", "message": "hi", "model": "nope"}, "unknown_model"),
        ({"type": "chat", "id": "m-4", "message": "hi", "conversation_id": "../etc"}, "invalid_field"),
        ({"type": "resume", "last_id": 5}, "invalid_field"),
    ],
)
def test_a_malformed_frame_gets_an_error_frame_and_the_connection_stays_usable(
    engine: RunningEngine, frame: Any, code: str
) -> None:
    ok_id = f"ok-{time.monotonic_ns()}"
    with Client(engine, "mal") as client:
        client.send(frame)
        error = client.recv()
        client.send({"type": "chat", "id": ok_id, "message": "still there?"})
        _, done = client.reply(ok_id)
    answered_id = frame.get("id") if isinstance(frame, dict) and code != "invalid_id" else None
    assert error == {"type": "error", "id": answered_id, "code": code, "message": error["message"]}
    assert error["message"]
    assert done["type"] == "done" and "still there?" in done["reply"]


def test_another_users_conversation_is_refused(engine: RunningEngine) -> None:
    with Client(engine, "own") as owner, Client(engine, "thief") as thief:
        owner.send({"type": "chat", "id": "c1", "message": "mine"})
        _, done = owner.reply("c1")
        thief.send({"type": "chat", "id": "c1", "message": "give", "conversation_id": done["conversation_id"]})
        _, refused = thief.reply("c1")
    assert refused["type"] == "error" and refused["code"] == "unknown_conversation"


def test_the_connection_gauge_goes_up_and_back_down(engine: RunningEngine) -> None:
    gauge = "assistant_websocket_connections"
    before = engine.metric(gauge)
    with Client(engine, "gil") as a, Client(engine, "gil") as b:
        a.send({"type": "pong"})
        b.send({"type": "pong"})
        during = engine.metric(gauge)
    deadline = time.monotonic() + 3
    while engine.metric(gauge) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert during == before + 2
    assert engine.metric(gauge) == before


def test_a_reply_is_found_by_another_worker_sharing_the_store_even_mid_reply(
    engine: RunningEngine, fresh_openai: FakeUpstream, engine_factory: StartEngine
) -> None:
    other = engine_factory(
        slow_models(fresh_openai),
        name="other-worker",
        secrets={"k": "sk-test"},
        channels=[ws_channel()],
        data_dir=engine.settings().data_dir,
    )
    full = slow_stream(fresh_openai)
    frame = {"type": "chat", "id": "switch-1", "message": "survive a switch", "model": "cloud"}
    with Client(engine, "wes") as first:
        first.send(frame)
        assert first.recv()["seq"] == 0
    with Client(other, "wes") as second:  # the first worker is still generating
        second.send(frame)
        chunks, done = second.reply("switch-1")
    assert done["type"] == "done" and done["reply"] == full and done["replayed"] is True
    assert chunks == []
    assert len(fresh_openai.calls) == 1


def _kill_hard(engine: RunningEngine) -> None:
    """SIGKILL the engine's parent and its workers, as a crash or the OOM killer would."""
    found = subprocess.run(["pgrep", "-P", str(engine.process.pid)], capture_output=True, text=True, check=False)
    for pid in [engine.process.pid, *map(int, found.stdout.split())]:
        os.kill(pid, signal.SIGKILL)
    engine.process.wait(10)


def test_a_resend_takes_over_the_claim_of_a_killed_worker_once_it_has_been_silent(
    engine_factory: StartEngine, fresh_openai: FakeUpstream, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "shared-data")
    first, other = (
        engine_factory(slow_models(fresh_openai), secrets={"k": "sk-test"}, channels=[ws_channel()], data_dir=data_dir)
        for _ in range(2)
    )
    slow_stream(fresh_openai, chunks=200, delay=0.1)
    frame = {"type": "chat", "id": "crash-1", "message": "die mid-reply", "model": "cloud"}
    with Client(first, "xia") as client:
        client.send(frame)
        assert client.recv()["seq"] == 0
        _kill_hard(first)  # its claim stays in the store, and nobody will ever finish that reply
    full = slow_stream(fresh_openai, chunks=3, delay=0)
    with Client(other, "xia") as again:
        again.send(frame)
        # The claim is taken over once its holder has been silent for a few seconds, long before
        # the request deadline (120 s here) would let it go.
        chunks, done = again.reply("crash-1", timeout=60)
    assert done["type"] == "done" and done["reply"] == full and done["replayed"] is False
    assert len(fresh_openai.calls) == 2


def test_a_reply_longer_than_the_silence_limit_is_not_taken_over_while_its_worker_lives(
    engine: RunningEngine, fresh_openai: FakeUpstream, engine_factory: StartEngine
) -> None:
    shared = {"secrets": {"k": "sk-test"}, "channels": [ws_channel()], "data_dir": engine.settings().data_dir}
    other = engine_factory(slow_models(fresh_openai), **shared)
    full = slow_stream(fresh_openai, chunks=30, delay=0.5)  # 15 s: longer than a silent claim may last
    frame = {"type": "chat", "id": "long-1", "message": "a long answer", "model": "cloud"}
    with Client(engine, "yul") as first:
        first.send(frame)
        assert first.recv()["seq"] == 0
        with Client(other, "yul") as second:  # waits for the first worker, which renews its claim
            second.send(frame)
            chunks, done = second.reply("long-1", timeout=60)
    assert done["type"] == "done" and done["reply"] == full and done["replayed"] is True
    assert len(fresh_openai.calls) == 1


def test_the_handshake_and_frames_follow_the_rest_apis_auth_and_rate_limit(engine_factory: StartEngine) -> None:
    secured = engine_factory(
        [model("local")],
        name="secured",
        channels=[ws_channel()],
        security=SecuritySettings(anonymous="off", jwt_secret="jwt", allowed_users=["ann"]),
        secrets={"jwt": JWT_KEY},
        rate_limit=RateLimitSettings(requests_per_minute=1, burst=2, key="user"),
    )
    refusals = {
        "none": ({}, "?user=ann"),
        "forged": ({"Authorization": "Bearer x.y.z"}, ""),
        "eve": (jwt_headers("eve"), ""),
        "ann claiming eve": (jwt_headers("ann"), "?user=eve"),  # the query may only name the token's subject
    }
    statuses = {}
    for name, (headers, query) in refusals.items():
        with pytest.raises(InvalidStatus) as refused:
            Client(secured, None, headers, query)
        statuses[name] = refused.value.response.status_code
        assert json.loads(refused.value.response.body)["error"]["code"] in ("unauthorized", "forbidden")
    assert statuses == {"none": 401, "forged": 401, "eve": 403, "ann claiming eve": 403}
    with Client(secured, None, jwt_headers("ann"), "?user=ann") as client:
        for n in (1, 2):
            client.send({"type": "chat", "id": f"a{n}", "message": f"hi {n}"})
            assert client.reply(f"a{n}")[1]["type"] == "done"
        client.send({"type": "chat", "id": "a3", "message": "one too many"})
        limited = client.recv()
        client.send({"type": "resume"})
        resumed = [client.recv(), client.recv(), client.recv()]
    assert limited["type"] == "error" and limited["code"] == "rate_limited" and limited["retry_after"] >= 1
    assert [f.get("id") for f in resumed] == ["a1", "a2", None]  # stored under the token's subject
    assert secured.metric("assistant_rate_limited_total", route="/ws") == 1
