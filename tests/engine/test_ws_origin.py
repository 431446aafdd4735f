"""The websocket handshake's `Origin` check against cross-site WebSocket hijacking, on a real engine
and through nginx rendered from the spec (which must hand the engine the browser's Origin and Host).

A browser always sends `Origin` on a websocket handshake and lets no page set it; a page of another
site could otherwise talk to the anonymous loopback user. Allowed: no Origin (not a browser), the
page's own origin (same host as the one the browser connected to), and the exact origins of
`channels.web.cors_origins`. Anything else gets a 403 before the connection opens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from assistantctl.engine.settings import ChannelSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from nginx_edge import APP, STRANGERS, running_edge, web_channel


@pytest.fixture(scope="module")
def engine(module_dir: Path) -> Iterator[RunningEngine]:
    channels = [*web_channel([APP], module_dir), ChannelSettings(name="websocket", path="/ws")]
    running = start_engine(module_dir / "ws-origin", [model("local")], channels=channels)
    yield running
    stop_engine(running)


@pytest.fixture(scope="module")
def edge(engine: RunningEngine, module_dir: Path) -> Iterator[str]:
    """nginx rendered from the default spec (websocket channel on, APP allowed), in front of `engine`."""
    with running_edge(engine, module_dir / "ws-edge") as base:
        yield base


@pytest.fixture(params=["engine", "nginx"])
def base(request: pytest.FixtureRequest, engine: RunningEngine) -> str:
    return engine.url if request.param == "engine" else request.getfixturevalue("edge")


def handshake(base: str, origin: str | None) -> int:
    """The handshake's HTTP status (101 when it opened); a ping/pong proves the socket works."""
    url = base.replace("http://", "ws://") + "/ws"
    try:
        with connect(url, origin=origin, proxy=None, open_timeout=5) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "pong"
            return 101
    except InvalidStatus as refused:
        body = json.loads(refused.response.body)
        assert body["error"]["code"] == "forbidden_origin", body
        return refused.response.status_code


def test_a_client_without_origin_is_not_a_browser_and_connects(base: str) -> None:
    assert handshake(base, None) == 101


def test_the_pages_own_origin_connects(base: str) -> None:
    assert handshake(base, base) == 101  # the page was served by the host it connects to


def test_an_origin_listed_in_cors_origins_connects(base: str) -> None:
    assert handshake(base, APP) == 101


@pytest.mark.parametrize("origin", STRANGERS)
def test_a_cross_site_origin_is_refused_with_403(base: str, origin: str) -> None:
    assert handshake(base, origin) == 403


def test_the_same_host_on_another_port_or_name_is_another_site(base: str) -> None:
    port = int(base.rsplit(":", 1)[1])
    other_port = f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"
    assert handshake(base, other_port) == 403  # another local service's page
    assert handshake(base, f"http://localhost:{port}") == 403  # the browser saw another origin
    assert handshake(base, f"https://127.0.0.1:{port}.evil.net") == 403


def test_without_a_web_channel_only_the_pages_own_origin_connects(engine_factory) -> None:
    running = engine_factory([model("local")], name="ws-only", channels=[ChannelSettings(name="websocket")])
    assert handshake(running.url, APP) == 403
    assert handshake(running.url, running.url) == 101


def test_a_wildcard_in_cors_origins_lets_every_page_connect(engine_factory, tmp_path) -> None:
    channels = [*web_channel(["*"], tmp_path), ChannelSettings(name="websocket")]
    running = engine_factory([model("local")], name="ws-any", channels=channels)
    assert handshake(running.url, "https://anyone.example.org") == 101
    assert handshake(running.url, "null") == 403  # a sandboxed or file: page is no origin to allow
