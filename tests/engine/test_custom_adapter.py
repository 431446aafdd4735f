"""A `provider: custom` model in a real engine process: the class is imported from the host's
Python path, built with its params (secret ones read from the secrets file), and used like any
adapter: plain and streamed answers, metrics, and fallback when it fails."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from assistantctl.engine.models.adapters.custom import CustomAdapter
from assistantctl.engine.models.catalog import build_catalog
from assistantctl.engine.models.upstream import ClientPool
from assistantctl.engine.settings import AdapterCodeSettings
from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings as render_settings
from assistantctl.schema.loader import load_spec
from engine_process import StartEngine, build_settings, model

MODULE = '''\
from collections.abc import AsyncIterator

from pydantic import BaseModel

from assistantctl.engine.models.adapters import CallOptions, Chunk, Message, Reply, UpstreamError, Usage, text_of


class Params(BaseModel):
    prefix: str
    token: str


class Shouter:
    """Answers with its prefix, the secret's length and the last message upper-cased, word by word."""

    Params = Params

    def __init__(self, params: Params) -> None:
        self.params = params

    def _words(self, messages: list[Message], opts: CallOptions) -> list[str]:
        last = text_of(messages[-1]["content"]).upper()
        words = [self.params.prefix, f"token-{len(self.params.token)}", f"max-{opts.max_tokens}", *last.split()]
        return words

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        words = self._words(messages, opts)
        return Reply(text=" ".join(words), usage=Usage(len(messages), len(words)))

    async def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        words = self._words(messages, opts)
        for i, word in enumerate(words):
            yield [Chunk(delta=word if i == 0 else " " + word)]
        yield [Chunk(usage=Usage(len(messages), len(words)), finish_reason="stop")]


class Broken:
    """Fails every call the way a buggy adapter would: with an exception that is no UpstreamError."""

    def __init__(self, params: dict) -> None:
        self.params = params

    async def chat(self, messages, opts):
        raise RuntimeError("bug in the adapter")

    async def stream(self, messages, opts):
        raise RuntimeError("bug in the adapter")
        yield []


class Wrong:
    """Returns something that is not a Reply."""

    def __init__(self, params: dict) -> None:
        pass

    async def chat(self, messages, opts):
        return "just text"

    async def stream(self, messages, opts):
        yield "just text"
'''

SECRET = "models.providers.shout.params.token"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adapters"


@pytest.fixture
def plugins(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "custom_shout.py").write_text(MODULE)
    return {"PYTHONPATH": str(folder)}


def shout(**kwargs) -> object:
    return model(
        "shout",
        "custom",
        adapter_class="custom_shout:Shouter",
        params={"prefix": "HEY"},
        param_secrets={"token": SECRET},
        max_tokens=7,
        **kwargs,
    )


def sse(body: str) -> list[dict]:
    return [json.loads(frame.removeprefix("data: ")) for frame in body.strip().split("\n\n")]


def test_the_engine_answers_through_a_custom_adapter(engine_factory: StartEngine, plugins) -> None:
    engine = engine_factory([shout()], env=plugins, secrets={SECRET: "twelve-chars"})
    with engine.client() as client:
        answer = client.post("/api/v1/chat", json={"message": "make me loud"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["reply"] == "HEY token-12 max-7 MAKE ME LOUD"
    assert answer.json()["model"] == "shout"
    assert engine.metric("assistant_model_calls_total", model="shout", outcome="success") == 1


def test_the_engine_imports_a_shipped_adapter_from_the_folder_its_settings_name(engine_factory, plugins) -> None:
    # no PYTHONPATH: the release's adapters folder (settings.adapter_code) is where the module is
    code = AdapterCodeSettings(path=plugins["PYTHONPATH"], digest="0" * 64)
    engine = engine_factory([shout()], secrets={SECRET: "four"}, adapter_code=code)
    with engine.client() as client:
        answer = client.post("/api/v1/chat", json={"message": "shipped"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["reply"] == "HEY token-4 max-7 SHIPPED"


def test_the_engine_streams_through_a_custom_adapter(engine_factory: StartEngine, plugins) -> None:
    engine = engine_factory([shout()], env=plugins, secrets={SECRET: "abc"})
    with engine.client() as client:
        response = client.post("/api/v1/chat/stream", json={"message": "stream this"})
    assert response.status_code == 200, response.text
    events = sse(response.text)
    deltas, final = events[:-1], events[-1]
    assert [e["delta"] for e in deltas] == ["HEY", " token-3", " max-7", " STREAM", " THIS"]
    assert final["done"] is True and final["model"] == "shout"
    assert final["usage"]["output_tokens"] == 5


def test_a_failing_custom_adapter_falls_back_to_the_builtin(engine_factory: StartEngine, plugins) -> None:
    broken = model("broken", "custom", adapter_class="custom_shout:Broken", params={"anything": [1, 2]})
    engine = engine_factory([broken, model("local")], fallback=["local"], env=plugins, retries=1)
    with engine.client() as client:
        plain = client.post("/api/v1/chat", json={"message": "hello"})
        streamed = client.post("/api/v1/chat/stream", json={"message": "hello"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["model"] == "local"
    assert streamed.status_code == 200 and sse(streamed.text)[-1]["model"] == "local"
    # not retried: an adapter's own exception is no transient upstream failure
    assert engine.metric("assistant_model_calls_total", model="broken", outcome="error") == 2
    assert engine.log_lines("RuntimeError: bug in the adapter")


def test_an_adapter_returning_the_wrong_shape_fails_over_too(engine_factory: StartEngine, plugins) -> None:
    wrong = model("wrong", "custom", adapter_class="custom_shout:Wrong")
    engine = engine_factory([wrong, model("local")], fallback=["local"], env=plugins)
    with engine.client() as client:
        plain = client.post("/api/v1/chat", json={"message": "hello"})
        streamed = client.post("/api/v1/chat/stream", json={"message": "hello"})
    assert plain.json()["model"] == "local"
    assert sse(streamed.text)[-1]["model"] == "local"
    assert engine.log_lines("returned str, not a Reply")


def test_params_that_do_not_fit_stop_the_adapter_from_being_built(plugins, monkeypatch) -> None:
    # the engine builds its catalog at start-up: this error stops the worker there
    monkeypatch.syspath_prepend(plugins["PYTHONPATH"])
    bad = model("shout", "custom", adapter_class="custom_shout:Shouter", params={"prefix": "x"})
    with pytest.raises(ValueError, match=r"model 'shout' \(custom_shout:Shouter\) cannot be built: ValidationError"):
        CustomAdapter(bad, {}, ClientPool())


def test_a_changed_param_secret_rebuilds_the_adapter_on_reload(plugins, monkeypatch) -> None:
    monkeypatch.syspath_prepend(plugins["PYTHONPATH"])
    settings = build_settings(Path("/unused"), 1, [shout()])
    first = build_catalog(settings, {SECRET: "one"}, ClientPool())
    same = build_catalog(settings, {SECRET: "one"}, ClientPool(), previous=first)
    changed = build_catalog(settings, {SECRET: "three"}, ClientPool(), previous=same)
    assert same.entries["shout"] is first.entries["shout"]
    assert changed.entries["shout"].adapter.impl.params.token == "three"


def test_the_example_faq_adapter_answers_and_hands_the_rest_to_the_builtin(engine_factory: StartEngine) -> None:
    # the settings the renderer writes for examples/adapters/assistant.yaml, run by a real engine
    spec = load_spec(EXAMPLE / "assistant.yaml")
    target = Target(spec=spec, host=spec.deploy.hosts[0], root="/unused", python=sys.executable)
    rendered = render_settings(target)
    engine = engine_factory(rendered.models, fallback=rendered.fallback, env={"PYTHONPATH": str(EXAMPLE)})
    with engine.client() as client:
        known = client.post("/api/v1/chat/stream", json={"message": "What are your opening hours?"})
        unknown = client.post("/api/v1/chat", json={"message": "tell me a joke"})
    assert "".join(e.get("delta", "") for e in sse(known.text)) == "We are open 9:00 to 17:00, Monday to Friday."
    assert sse(known.text)[-1]["model"] == "faq"
    assert unknown.json()["model"] == "local"
