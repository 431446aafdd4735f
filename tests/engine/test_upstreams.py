"""The official openai SDK against the engine, and each adapter against a fake upstream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from api_keys import bearer, create_key, wait_for_key
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_models import WORDS, FakeUpstream


@pytest.fixture(scope="module")
def engine(
    module_dir: Path, openai_fake: FakeUpstream, anthropic_fake: FakeUpstream, ollama_fake: FakeUpstream
) -> Iterator[RunningEngine]:
    models = [
        model("local"),
        model("cloud", "openai", model="gpt-test", api_base=f"{openai_fake.url}/v1", api_key_secret="k.openai"),
        model("claude", "anthropic", model="claude-test", api_base=anthropic_fake.url, api_key_secret="k.anthropic"),
        model("llama", "ollama", model="llama-test", api_base=ollama_fake.url),
    ]
    secrets = {"k.openai": "sk-openai-test", "k.anthropic": "sk-ant-test"}
    running = start_engine(module_dir / "upstreams", models, secrets=secrets)
    yield running
    stop_engine(running)


@pytest.fixture(scope="module")
def api_key(engine: RunningEngine) -> str:
    """The SDK sends its api_key as a bearer token, so it must be one of the engine's own keys."""
    key = create_key(engine.settings_path, "sdk")
    wait_for_key(engine.url, bearer(key))
    return key


@pytest.fixture
def sdk(engine: RunningEngine, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{engine.url}/v1", api_key=api_key, max_retries=0)


FAKE_TEXT = "".join(WORDS)


def test_openai_sdk_lists_the_declared_models(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == ["local", "cloud", "claude", "llama"]


def test_openai_sdk_chats_with_the_builtin_default(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "ping pong"}])
    assert completion.model == "local"
    assert "ping pong" in completion.choices[0].message.content
    assert completion.usage.prompt_tokens == 2
    assert completion.usage.completion_tokens == len(completion.choices[0].message.content.split())


def test_openai_sdk_streams_from_the_builtin_model(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "stream this"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream this" in text
    assert chunks[-1].usage.completion_tokens == len(text.split())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_sdk_through_the_engine_to_an_openai_upstream(sdk: openai.OpenAI, openai_fake: FakeUpstream) -> None:
    openai_fake.reset()
    completion = sdk.chat.completions.create(
        model="cloud", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Request-ID": "sdk-1"}
    )
    assert completion.choices[0].message.content == FAKE_TEXT
    assert completion.usage.prompt_tokens == 7
    call = openai_fake.calls[0]
    assert call["path"] == "/v1/chat/completions" and call["body"]["model"] == "gpt-test"
    assert call["headers"]["authorization"] == "Bearer sk-openai-test"
    assert call["headers"]["x-request-id"] == "sdk-1"

    stream = sdk.chat.completions.create(
        model="cloud",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FAKE_TEXT
    assert chunks[-1].usage.completion_tokens == len(WORDS)


def _chat(engine: RunningEngine, name: str) -> tuple[dict, list[dict]]:
    with engine.client() as client:
        plain = client.post("/api/v1/chat", json={"message": "hi", "model": name}).json()
        streamed = client.post("/api/v1/chat/stream", json={"message": "hi", "model": name}).text
    return plain, [json.loads(frame[6:]) for frame in streamed.strip().split("\n\n")]


def test_anthropic_adapter_speaks_the_messages_api(engine: RunningEngine, anthropic_fake: FakeUpstream) -> None:
    anthropic_fake.reset()
    plain, events = _chat(engine, "claude")
    assert plain["reply"] == FAKE_TEXT and plain["model"] == "claude"
    assert plain["usage"] == {"input_tokens": 11, "output_tokens": len(WORDS), "total_tokens": 11 + len(WORDS)}
    assert "".join(e.get("delta", "") for e in events) == FAKE_TEXT
    assert events[-1]["usage"]["input_tokens"] == 11
    call = anthropic_fake.calls[0]
    assert call["path"] == "/v1/messages"
    assert call["headers"]["x-api-key"] == "sk-ant-test"
    assert call["headers"]["anthropic-version"] == "2023-06-01"
    assert call["body"]["max_tokens"] > 0 and call["body"]["model"] == "claude-test"


def test_ollama_adapter_streams_ndjson(engine: RunningEngine, ollama_fake: FakeUpstream) -> None:
    ollama_fake.reset()
    plain, events = _chat(engine, "llama")
    assert plain["reply"] == FAKE_TEXT
    assert plain["usage"]["input_tokens"] == 13
    assert [e["delta"] for e in events[:-1]] == WORDS
    assert events[-1]["usage"]["output_tokens"] == len(WORDS)
    assert [c["body"]["stream"] for c in ollama_fake.calls] == [False, True]


def test_closing_the_client_stops_the_upstream_stream(engine: RunningEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.reset()
    openai_fake.behaviour.chunk_delay = 0.2
    openai_fake.behaviour.stream_chunks = 50
    with (
        engine.client() as client,
        client.stream("POST", "/api/v1/chat/stream", json={"message": "long", "model": "cloud"}) as response,
    ):
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    # 50 chunks at 0.2 s would take 10 s: closing well before that means the engine hung up upstream.
    deadline = time.monotonic() + 3
    while not openai_fake.streams_closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert openai_fake.streams_closed == 1
    assert openai_fake.streams_finished == 0
