"""What the web page needs from the websocket channel, against the real engine on loopback: a
`cancel` frame that really stops the upstream call, and a key sent as a subprotocol (a browser
cannot set Authorization on a websocket)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from assistantctl.engine.settings import SecuritySettings
from engine_process import RunningEngine, StartEngine, as_user, model, stop_engine
from fake_models import FakeUpstream
from ws_client import JWT_KEY, Client, jwt_headers, slow_stream, start_ws_engine, ws_channel


@pytest.fixture(scope="module")
def engine(module_dir: Path, openai_fake: FakeUpstream) -> Iterator[RunningEngine]:
    running = start_ws_engine(module_dir / "ws-browser", openai_fake)
    yield running
    stop_engine(running)


def _wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_cancel_frame_stops_the_upstream_call_and_stores_nothing(
    engine: RunningEngine, fresh_openai: FakeUpstream
) -> None:
    slow_stream(fresh_openai, chunks=40, delay=0.1)
    frame = {"type": "chat", "id": "c-1", "message": "a long story please", "model": "cloud"}
    with Client(engine, "cal") as client:
        client.send(frame)
        assert [client.recv()["seq"], client.recv()["seq"]] == [0, 1]
        client.send({"type": "cancel", "id": "c-1"})
        frames = [client.recv()]
        while frames[-1]["type"] == "chunk":  # chunks already on their way may come first
            frames.append(client.recv())
        assert frames[-1] == {"type": "cancelled", "id": "c-1"}
        # The fake upstream sees its client go away long before its 4 s stream would have ended.
        assert _wait_for(lambda: fresh_openai.streams_closed == 1, 2.0)
        assert fresh_openai.streams_finished == 0
        with engine.client() as http:
            assert http.get("/api/v1/history", headers=as_user("cal")).json()["messages"] == []
        # The claim was released: the same id asks the model again and is answered in full.
        fresh_openai.behaviour.chunk_delay = 0.0
        client.send(frame)
        _, done = client.reply("c-1")
    assert done["type"] == "done" and done["replayed"] is False
    assert len(fresh_openai.calls) == 2


def test_a_cancel_for_no_running_reply_gets_an_error_frame(engine: RunningEngine) -> None:
    with Client(engine, "dee") as client:
        client.send({"type": "cancel", "id": "never-sent"})
        refused = client.recv()
        client.send({"type": "cancel"})
        malformed = client.recv()
    assert refused["type"] == "error" and refused["code"] == "unknown_id" and refused["id"] == "never-sent"
    assert malformed["code"] == "unknown_id"


def test_a_browser_signs_in_with_a_bearer_subprotocol_that_is_never_echoed(engine_factory: StartEngine) -> None:
    secured = engine_factory(
        [model("local")],
        name="secured",
        channels=[ws_channel()],
        security=SecuritySettings(anonymous="off", jwt_secret="jwt"),
        secrets={"jwt": JWT_KEY},
    )
    url = secured.url.replace("http://", "ws://") + "/ws"
    token = jwt_headers("bea")["Authorization"].removeprefix("Bearer ")
    with connect(url, subprotocols=["assistant.v1", f"bearer.{token}"], proxy=None, open_timeout=5) as ws:
        assert ws.subprotocol == "assistant.v1"
        ws.send(json.dumps({"type": "chat", "id": "b-1", "message": "hi from a browser"}))
        frames = [json.loads(ws.recv(timeout=10))]
        while frames[-1]["type"] == "chunk":
            frames.append(json.loads(ws.recv(timeout=10)))
    assert frames[-1]["type"] == "done"
    with secured.client() as http:
        history = http.get("/api/v1/history", headers=jwt_headers("bea")).json()
    assert history["user"] == "bea" and history["messages"][0]["id"] == frames[-1]["message_id"]
    for offered in (["assistant.v1"], ["assistant.v1", "bearer.x.y.z"]):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, subprotocols=offered, proxy=None, open_timeout=5)
        assert refused.value.response.status_code == 401
