"""Fixtures that run the real engine and fake upstreams; the helpers live in engine_process.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_tool_models import ToolUpstream

from assistantctl.engine.settings import ModelSettings
from engine_process import RunningEngine, StartEngine, start_engine, stop_engine
from fake_loop_model import start_loop_model
from fake_models import FakeUpstream, start_fake
from fake_platforms import FakePlatforms, start_platforms
from postgres_server import Service, postgres_cluster
from telegram_helpers import SlowModel


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[StartEngine]:
    started: list[RunningEngine] = []

    def start(models: list[ModelSettings], name: str = "engine", **kwargs: Any) -> RunningEngine:
        engine = start_engine(tmp_path / name, models, **kwargs)
        started.append(engine)
        return engine

    yield start
    for engine in started:
        stop_engine(engine)


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


def _fake(kind: str) -> Iterator[FakeUpstream]:
    fake, server, thread = start_fake(kind)
    yield fake
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeUpstream]:
    yield from _fake("openai")


@pytest.fixture
def fresh_openai(openai_fake: FakeUpstream) -> FakeUpstream:
    """The module's `openai_fake` with its calls and behaviour back to the defaults."""
    openai_fake.reset()
    return openai_fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeUpstream]:
    yield from _fake("anthropic")


@pytest.fixture(scope="module")
def ollama_fake() -> Iterator[FakeUpstream]:
    yield from _fake("ollama")


@pytest.fixture(scope="module")
def platforms() -> Iterator[FakePlatforms]:
    """A fake Telegram / WhatsApp / WeCom API that records what the engine sends it."""
    fake, server, thread = start_platforms()
    yield fake
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def fresh_platforms(platforms: FakePlatforms) -> FakePlatforms:
    """The module's `platforms` with what earlier tests sent and queued forgotten."""
    platforms.reset()
    return platforms


@pytest.fixture(scope="module")
def slow_model() -> Iterator[SlowModel]:
    """A module's own SlowModel (telegram_helpers.py): waits as a message asks, answers "echo: ..."."""
    running = SlowModel()
    yield running
    running.server.should_exit = True
    running.thread.join(5)


@pytest.fixture(scope="module")
def loop_model() -> Iterator[ToolUpstream]:
    """A fake OpenAI-compatible model that follows each request's tool plan (fake_loop_model.py)."""
    fake, server, thread = start_loop_model()
    yield fake
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Service]:
    """A real PostgreSQL on loopback for the module (tests/postgres_server.py)."""
    with postgres_cluster() as service:
        yield service


@pytest.fixture(params=["sqlite", "postgres"])
def store_dsn(request: pytest.FixtureRequest) -> str | None:
    """Each history backend in turn: None for the node's SQLite, else the PostgreSQL's DSN (started
    here, outside any event loop)."""
    return request.getfixturevalue("postgres").url if request.param == "postgres" else None
