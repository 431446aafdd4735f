"""Fallback, retries, the circuit breaker and the queue, against a fake upstream that misbehaves."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from engine_process import RunningEngine, StartEngine, model
from fake_models import FakeUpstream


@pytest.fixture
def engine(engine_factory: StartEngine, openai_fake: FakeUpstream) -> RunningEngine:
    openai_fake.reset()
    primary = model("primary", "openai", api_base=f"{openai_fake.url}/v1", read_timeout_seconds=0.5)
    return engine_factory(
        [primary, model("backup")],
        fallback=["backup"],
        retries=1,
        breaker_failure_threshold=3,
        breaker_cooldown_seconds=0.6,
    )


def _ask(engine: RunningEngine, **body: object) -> dict:
    with engine.client() as client:
        response = client.post("/api/v1/chat", json={"message": "hi", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_500ing_model_falls_back_after_one_retry(engine: RunningEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.behaviour.fail_next = 2
    assert _ask(engine)["model"] == "backup"
    assert len(openai_fake.calls) == 2  # first try + one retry
    assert engine.metric("assistant_model_calls_total", model="primary", outcome="error") == 2
    assert engine.metric("assistant_model_calls_total", model="backup", outcome="success") == 1


def test_a_retry_can_save_the_call(engine: RunningEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.behaviour.fail_next = 1
    openai_fake.behaviour.fail_status = 429
    assert _ask(engine)["model"] == "primary"


def test_client_errors_are_not_retried(engine: RunningEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.behaviour.fail_next = 1
    openai_fake.behaviour.fail_status = 400
    assert _ask(engine)["model"] == "backup"
    assert len(openai_fake.calls) == 1


def test_a_hanging_model_times_out_and_falls_back(engine: RunningEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.behaviour.hang = True
    started = time.monotonic()
    assert _ask(engine)["model"] == "backup"
    assert time.monotonic() - started < 3
    assert engine.metric("assistant_model_calls_total", model="primary", outcome="timeout") == 2


def test_stream_falls_back_before_the_first_chunk(engine: RunningEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.behaviour.fail_next = 5
    with engine.client() as client:
        text = client.post("/api/v1/chat/stream", json={"message": "hi"}).text
    assert '"model":"backup"' in text.rsplit("data: ", 1)[1]


def test_breaker_opens_then_closes_after_the_cooldown(engine: RunningEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.behaviour.fail_next = 4  # 2 requests x (try + retry) = 3 failures opens it
    _ask(engine)
    _ask(engine)
    assert engine.metric("assistant_model_breaker_open", model="primary") == 1
    calls = len(openai_fake.calls)
    assert _ask(engine)["model"] == "backup"
    assert len(openai_fake.calls) == calls  # skipped while open
    assert engine.metric("assistant_model_calls_total", model="primary", outcome="rejected") >= 1
    time.sleep(0.7)
    openai_fake.behaviour.fail_next = 0
    assert _ask(engine)["model"] == "primary"  # the half-open probe succeeds
    assert engine.metric("assistant_model_breaker_open", model="primary") == 0


def test_only_when_every_model_fails_the_client_gets_an_error(
    engine_factory: StartEngine, openai_fake: FakeUpstream
) -> None:
    openai_fake.reset()
    only = engine_factory([model("only", "openai", api_base=f"{openai_fake.url}/v1")], name="only", retries=0)
    openai_fake.behaviour.fail_next = 1
    with only.client() as client:
        response = client.post("/api/v1/chat", json={"message": "hi"})
    assert response.status_code == 502
    assert "500" in response.json()["error"]["message"]


def test_a_full_queue_rejects_with_503(engine_factory: StartEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.reset()
    openai_fake.behaviour.hang = True
    slow = model("slow", "openai", api_base=f"{openai_fake.url}/v1", max_concurrency=1, read_timeout_seconds=2)
    engine = engine_factory([slow], name="queue", queue_size=1, retries=0)

    def ask() -> int:
        with engine.client() as client:
            return client.post("/api/v1/chat", json={"message": "hi"}).status_code

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(ask)
        time.sleep(0.3)
        second = pool.submit(ask)
        time.sleep(0.3)
        assert engine.metric("assistant_queue_depth") == 1
        assert ask() == 503
        assert engine.metric("assistant_model_calls_total", model="slow", outcome="rejected") == 1
        openai_fake.behaviour.hang = False
        assert first.result() == 504  # its upstream call hung past read_timeout_seconds
        assert second.result() == 200  # it waited in the queue, then got the slot


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
WITH_IMAGE = {"role": "user", "content": [{"type": "text", "text": "what is on this photo?"}, IMAGE]}


def _complete(engine: RunningEngine, message: dict) -> httpx.Response:
    with engine.client() as client:
        return client.post("/v1/chat/completions", json={"model": "primary", "messages": [message]})


def test_a_fallback_that_reads_no_images_is_not_sent_an_image(
    engine_factory: StartEngine, openai_fake: FakeUpstream
) -> None:
    openai_fake.reset()
    primary = model("primary", "openai", api_base=f"{openai_fake.url}/v1", input=["text", "image"])
    engine = engine_factory([primary, model("backup")], fallback=["backup"], retries=0)

    openai_fake.behaviour.fail_next = 1
    response = _complete(engine, WITH_IMAGE)
    assert response.status_code == 502, response.text  # the primary's failure, not an answer blind to the photo
    assert engine.metric("assistant_model_calls_total", model="backup", outcome="rejected") == 1
    assert engine.metric("assistant_model_calls_total", model="backup", outcome="success") == 0
    assert engine.log_lines("does not read images")

    openai_fake.behaviour.fail_next = 1  # text alone falls back as before
    response = _complete(engine, {"role": "user", "content": "hello"})
    assert response.status_code == 200 and response.json()["model"] == "backup", response.text


def test_a_fallback_that_reads_images_answers_an_image(engine_factory: StartEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.reset()
    base = f"{openai_fake.url}/v1"
    primary = model("primary", "openai", api_base=base, input=["text", "image"])
    seeing = model("seeing", "openai", api_base=base, input=["text", "image"])
    engine = engine_factory([primary, model("backup"), seeing], fallback=["backup", "seeing"], retries=0)

    openai_fake.behaviour.fail_next = 1
    response = _complete(engine, WITH_IMAGE)
    assert response.status_code == 200 and response.json()["model"] == "seeing", response.text
    assert openai_fake.calls[-1]["body"]["messages"][-1]["content"][1] == IMAGE
    assert engine.metric("assistant_model_calls_total", model="backup", outcome="rejected") == 1
