"""/v1/chat/completions as a faithful gateway: the official openai SDK runs its own tool loop
through a real engine to each adapter's fake upstream, which records exactly what it received."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_tool_models import ANSWER, ARGUMENTS, CALL_ID, ToolUpstream, start_tool_upstream

from api_keys import bearer, create_key, wait_for_key
from engine_process import RunningEngine, model, start_engine, stop_engine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = "What is the weather in Paris?"
IMAGE = "data:image/png;base64,iVBORw0KGgo="


def get_weather(city: str) -> str:
    return "21C" if city == "Paris" else "unknown"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, ToolUpstream]]:
    started = {kind: start_tool_upstream(kind) for kind in ("openai", "anthropic", "ollama")}
    yield {kind: fake for kind, (fake, _, _) in started.items()}
    for _, server, thread in started.values():
        server.should_exit = True
        thread.join(5)


@pytest.fixture(scope="module")
def engine(module_dir: Path, upstreams: dict[str, ToolUpstream]) -> Iterator[RunningEngine]:
    models = [
        model("local"),
        model("gpt", "openai", model="gpt-test", api_base=f"{upstreams['openai'].url}/v1", api_key_secret="k.o"),
        model("claude", "anthropic", model="claude-test", api_base=upstreams["anthropic"].url, api_key_secret="k.a"),
        model("llama", "ollama", model="llama-test", api_base=upstreams["ollama"].url),
    ]
    running = start_engine(module_dir / "tools", models, secrets={"k.o": "sk-o", "k.a": "sk-a"})
    yield running
    stop_engine(running)


@pytest.fixture(scope="module")
def sdk(engine: RunningEngine) -> openai.OpenAI:
    key = create_key(engine.settings_path, "sdk")
    wait_for_key(engine.url, bearer(key))
    return openai.OpenAI(base_url=f"{engine.url}/v1", api_key=key, max_retries=0)


def _ask(sdk: openai.OpenAI, name: str, messages: list[dict], stream: bool, **extra: Any) -> dict[str, Any]:
    """One completion as {content, tool_calls, finish_reason}; a stream's deltas put together the
    way an SDK user does (tool call pieces joined by index)."""
    if not stream:
        choice = sdk.chat.completions.create(model=name, messages=messages, **extra).choices[0]
        calls = [c.model_dump(exclude_none=True) for c in choice.message.tool_calls or []]
        return {"content": choice.message.content, "tool_calls": calls, "finish_reason": choice.finish_reason}
    content, calls, finish = "", {}, None
    for chunk in sdk.chat.completions.create(model=name, messages=messages, stream=True, **extra):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        finish = choice.finish_reason or finish
        for piece in choice.delta.tool_calls or []:
            call = calls.setdefault(
                piece.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = piece.id or call["id"]
            call["type"] = piece.type or call["type"]
            if piece.function:
                call["function"]["name"] += piece.function.name or ""
                call["function"]["arguments"] += piece.function.arguments or ""
    return {"content": content, "tool_calls": [calls[i] for i in sorted(calls)], "finish_reason": finish}


def _tool_loop(sdk: openai.OpenAI, name: str, stream: bool) -> tuple[dict[str, Any], dict[str, Any], list[dict]]:
    """The client's loop: ask with the tool, run every call the model asks for, send the results back."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    first = _ask(sdk, name, messages, stream, tools=[WEATHER], tool_choice="auto")
    messages.append({"role": "assistant", "content": first["content"] or None, "tool_calls": first["tool_calls"]})
    for call in first["tool_calls"]:
        result = get_weather(**json.loads(call["function"]["arguments"]))
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    second = _ask(sdk, name, messages, stream, tools=[WEATHER])
    return first, second, messages


def _asked_for_weather(first: dict[str, Any], call_id: str | None = CALL_ID) -> None:
    assert first["finish_reason"] == "tool_calls"
    [call] = first["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == ARGUMENTS
    assert call["id"] == call_id if call_id else call["id"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_loop_reaches_an_openai_upstream_unchanged(
    sdk: openai.OpenAI, upstreams: dict[str, ToolUpstream], stream: bool
) -> None:
    fake = upstreams["openai"]
    fake.calls.clear()
    first, second, sent = _tool_loop(sdk, "gpt", stream)
    _asked_for_weather(first)
    assert second["content"] == ANSWER and second["finish_reason"] == "stop"
    asked, answered = fake.calls
    assert asked["tools"] == [WEATHER] and asked["tool_choice"] == "auto"
    assert answered["tools"] == [WEATHER]
    assistant, tool = answered["messages"][1:]
    assert assistant == {"role": "assistant", "content": None, "tool_calls": sent[1]["tool_calls"]}
    assert tool == {"role": "tool", "tool_call_id": CALL_ID, "content": "21C"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_loop_is_translated_for_anthropic(
    sdk: openai.OpenAI, upstreams: dict[str, ToolUpstream], stream: bool
) -> None:
    fake = upstreams["anthropic"]
    fake.calls.clear()
    first, second, _ = _tool_loop(sdk, "claude", stream)
    _asked_for_weather(first)
    assert first["content"] == "Let me check."
    assert second["content"] == ANSWER and second["finish_reason"] == "stop"
    asked, answered = fake.calls
    function = WEATHER["function"]
    tool = {"name": "get_weather", "description": function["description"], "input_schema": function["parameters"]}
    assert asked["tools"] == [tool] and asked["tool_choice"] == {"type": "auto"}
    assert asked["messages"] == [{"role": "user", "content": QUESTION}]
    assert answered["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": CALL_ID, "name": "get_weather", "input": ARGUMENTS},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": CALL_ID, "content": "21C"}]},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_loop_is_translated_for_ollama(
    sdk: openai.OpenAI, upstreams: dict[str, ToolUpstream], stream: bool
) -> None:
    fake = upstreams["ollama"]
    fake.calls.clear()
    first, second, _ = _tool_loop(sdk, "llama", stream)
    _asked_for_weather(first, call_id=None)  # Ollama names no call: the engine makes up an id
    assert second["content"] == ANSWER and second["finish_reason"] == "stop"
    asked, answered = fake.calls
    assert asked["tools"] == [WEATHER]
    call_id = first["tool_calls"][0]["id"]
    assert answered["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": ARGUMENTS}}],
        },
        {"role": "tool", "content": "21C", "tool_name": "get_weather"},
    ]
    assert call_id.startswith("call_")


def test_sampling_format_and_image_parts_reach_an_openai_upstream(
    sdk: openai.OpenAI, upstreams: dict[str, ToolUpstream]
) -> None:
    fake = upstreams["openai"]
    fake.calls.clear()
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    response_format = {"type": "json_object"}
    sdk.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": content}],
        top_p=0.5,
        stop=["END"],
        seed=7,
        response_format=response_format,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    [body] = fake.calls
    assert body["messages"] == [{"role": "user", "content": content}]
    assert (body["top_p"], body["stop"], body["seed"]) == (0.5, ["END"], 7)
    assert body["response_format"] == response_format
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False


def test_anthropic_gets_images_stop_sequences_and_a_forced_tool(
    sdk: openai.OpenAI, upstreams: dict[str, ToolUpstream]
) -> None:
    fake = upstreams["anthropic"]
    fake.calls.clear()
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    sdk.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": content}],
        top_p=0.5,
        stop="END",
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    [body] = fake.calls
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    assert (body["top_p"], body["stop_sequences"]) == (0.5, ["END"])
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}


BAD_BODIES = {
    "tool message without tool_call_id": [{"role": "tool", "content": "21C"}],
    "tool_calls not a list": [{"role": "assistant", "content": None, "tool_calls": {"id": "x"}}],
    "arguments not a string": [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}],
        }
    ],
    "tool call without a name": [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}
    ],
    "tool call not an object": [{"role": "assistant", "tool_calls": [None]}],
    "unknown content part": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}],
}
BAD_FIELDS = {
    "tools not a list": {"tools": {"type": "function"}},
    "tool not an object": {"tools": [None]},
    "tool without a function name": {"tools": [{"type": "function", "function": {"parameters": {}}}]},
    "tool_choice unknown": {"tool_choice": "sometimes"},
    "top_p out of range": {"top_p": 3},
    "stop not strings": {"stop": [1, 2]},
    "seed not an integer": {"seed": "x"},
    "response_format not an object": {"response_format": "json"},
}


@pytest.mark.parametrize("messages", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_malformed_tool_messages_are_a_400(engine: RunningEngine, messages: list[dict]) -> None:
    answer = httpx.post(f"{engine.url}/v1/chat/completions", json={"model": "gpt", "messages": messages})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_field" and answer.json()["error"]["message"]


@pytest.mark.parametrize("fields", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_malformed_request_fields_are_a_400(engine: RunningEngine, fields: dict) -> None:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], **fields}
    answer = httpx.post(f"{engine.url}/v1/chat/completions", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_field"


def test_the_builtin_model_ignores_tools_and_still_answers(sdk: openai.OpenAI) -> None:
    messages = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "21C"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "thanks"}, {"type": "image_url", "image_url": {"url": IMAGE}}],
        },
    ]
    for stream in (False, True):
        answer = _ask(sdk, "local", messages, stream, tools=[WEATHER])
        assert "thanks" in answer["content"] and answer["tool_calls"] == [] and answer["finish_reason"] == "stop"
