"""The engine's own API against the builtin model: chat, SSE framing, history, errors, logs, metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine_process import RunningEngine, as_user, model, start_engine, stop_engine

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) engine\.[a-z]+"
    r"( [a-z_]+=[^ \"]+)*( msg=\"(?:[^\"\\]|\\.)*\")?$"
)


@pytest.fixture(scope="module")
def engine(module_dir: Path) -> Iterator[RunningEngine]:
    running = start_engine(module_dir / "api", [model("local")], max_message_chars=500)
    yield running
    stop_engine(running)


def sse_events(body: str) -> list[dict]:
    assert body.endswith("\n\n")
    events = []
    for frame in body[:-2].split("\n\n"):
        assert frame.startswith("data: ") and "\n" not in frame, frame
        events.append(json.loads(frame[len("data: ") :]))
    return events


def test_health_and_ready_report_a_working_engine(engine: RunningEngine) -> None:
    with engine.client() as client:
        assert client.get("/health").json()["status"] == "ok"
        ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"settings": True, "storage": True, "models": True}


def test_chat_answers_with_reply_ids_and_usage(engine: RunningEngine) -> None:
    with engine.client() as client:
        answer = client.post("/api/v1/chat", json={"message": "what is the time"}, headers=as_user("ann")).json()
    assert "what is the time" in answer["reply"]
    assert answer["model"] == "local"
    assert len(answer["conversation_id"]) == 32 and len(answer["message_id"]) == 32
    assert answer["usage"]["input_tokens"] == 4
    assert answer["usage"]["output_tokens"] == len(answer["reply"].split())


def test_conversation_keeps_context_between_turns(engine: RunningEngine) -> None:
    with engine.client() as client:
        first = client.post("/api/v1/chat", json={"message": "one"}, headers=as_user("bea")).json()
        second = client.post(
            "/api/v1/chat", json={"message": "two", "conversation_id": first["conversation_id"]}, headers=as_user("bea")
        ).json()
        stolen = client.post(
            "/api/v1/chat", json={"message": "x", "conversation_id": first["conversation_id"]}, headers=as_user("eve")
        )
    assert "(turn 2)" in second["reply"]
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    assert stolen.status_code == 404


def test_stream_sends_sse_deltas_then_a_done_event_with_usage(engine: RunningEngine) -> None:
    with engine.client(headers=as_user("cat")) as client:
        whole = client.post("/api/v1/chat", json={"message": "stream me"}).json()
        response = client.post("/api/v1/chat/stream", json={"message": "stream me"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    deltas, final = events[:-1], events[-1]
    assert len(deltas) > 5 and all(set(e) == {"delta"} for e in deltas)
    assert "".join(e["delta"] for e in deltas) == whole["reply"]
    assert final["done"] is True and final["model"] == "local"
    assert final["usage"]["output_tokens"] == len(deltas)
    assert final["conversation_id"] and final["message_id"]


def test_history_pages_newest_first_without_overlap(engine: RunningEngine) -> None:
    with engine.client(headers=as_user("dan")) as client:
        conversation = None
        for i in range(3):
            body = {"message": f"message {i}", **({"conversation_id": conversation} if conversation else {})}
            conversation = client.post("/api/v1/chat", json=body).json()["conversation_id"]
        page1 = client.get("/api/v1/history", params={"conversation_id": conversation, "limit": 4}).json()
        page2 = client.get(
            "/api/v1/history",
            params={"conversation_id": conversation, "limit": 4, "before": page1["next_before"]},
        ).json()
        other = client.get("/api/v1/history", headers=as_user("nobody")).json()
    assert [m["role"] for m in page1["messages"]] == ["assistant", "user"] * 2
    assert page1["messages"][1]["content"] == "message 2"
    assert [m["content"] for m in page2["messages"] if m["role"] == "user"] == ["message 0"]
    assert page2["next_before"] is None
    ids = [m["id"] for m in page1["messages"] + page2["messages"]]
    assert len(ids) == len(set(ids)) == 6
    assert other["messages"] == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/chat", b"{not json", 400),
        ("/api/v1/chat", b"[1, 2]", 400),
        ("/api/v1/chat", b'{"conversation_id": "x"}', 400),
        ("/api/v1/chat", b'{"message": 5}', 400),
        ("/api/v1/chat", b'{"message": "   "}', 400),
        ("/api/v1/chat", json.dumps({"message": "x" * 501}).encode(), 413),
        ("/api/v1/chat", b'{"message": "hi", "model": "nope"}', 404),
        ("/api/v1/chat", b'{"message": "hi", "priority": "high"}', 400),
        ("/api/v1/chat", b'{"message": "hi", "conversation_id": "../etc"}', 400),
        ("/api/v1/chat/stream", b"", 400),
        ("/v1/chat/completions", b'{"messages": []}', 400),
        ("/v1/chat/completions", b'{"messages": [{"role": "wizard", "content": "x"}]}', 400),
        ("/v1/chat/completions", b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404),
    ],
)
def test_bad_requests_get_a_json_4xx(engine: RunningEngine, path: str, body: bytes, status: int) -> None:
    with engine.client() as client:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_a_user_name_outside_the_pattern_gets_400(engine: RunningEngine) -> None:
    with engine.client(headers=as_user("has space")) as client:
        response = client.post("/api/v1/chat", json={"message": "hi"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_user"


def test_bad_history_parameters_get_400(engine: RunningEngine) -> None:
    with engine.client() as client:
        assert client.get("/api/v1/history", params={"limit": "many"}).status_code == 400
        assert client.get("/api/v1/history", params={"limit": 0}).status_code == 400


def test_request_id_is_echoed_and_logged_in_the_contract_format(engine: RunningEngine) -> None:
    with engine.client() as client:
        response = client.post(
            "/api/v1/chat", json={"message": "log me"}, headers={"X-Request-ID": "req-abc-123", **as_user("fay")}
        )
    assert response.headers["x-request-id"] == "req-abc-123"
    engine.log_lines("engine.access request_id=req-abc-123")
    lines = engine.log_lines("engine.model request_id=req-abc-123")
    assert all(LOG_LINE.match(line) for line in lines), [line for line in lines if not LOG_LINE.match(line)]
    access = [line for line in lines if "engine.access request_id=req-abc-123" in line]
    assert len(access) == 1
    assert " user=fay method=POST route=/api/v1/chat status=200 latency_ms=" in access[0]
    assert any("engine.model request_id=req-abc-123 user=fay model=local outcome=success" in line for line in lines)


def test_metrics_use_the_contract_names(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.post("/api/v1/chat", json={"message": "count me"}, headers=as_user("gus"))
        client.post("/api/v1/chat/stream", json={"message": "count me"}, headers=as_user("gus"))
        text = client.get("/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("assistant_")}
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}
    assert base == {
        "assistant_http_requests_total",
        "assistant_http_request_duration_seconds",
        "assistant_model_calls_total",
        "assistant_model_call_duration_seconds",
        "assistant_model_tokens_total",
        "assistant_time_to_first_token_seconds",
        "assistant_model_breaker_open",
        "assistant_queue_depth",
        "assistant_websocket_connections",
        "assistant_rate_limited_total",
        "assistant_limit_refusals_total",
    }
    assert engine.metric("assistant_model_calls_total", model="local", outcome="success") >= 2
    assert engine.metric("assistant_model_tokens_total", model="local", direction="input") >= 4
    assert 'le="0.25"' in text and 'le="2.0"' in text
