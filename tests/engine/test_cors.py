"""CORS from `channels.web.cors_origins`: a browser gets the same answer from the engine directly
and through nginx (rendered from the same spec), because the engine alone answers and nginx passes
preflights and the Access-Control-* headers through untouched.

The spec and settings here go through the real loader and renderers; the engine and nginx are real
processes on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assistantctl.renderers.engine import build_settings
from assistantctl.renderers.nginx import render as render_nginx
from assistantctl.schema.loader import SpecError
from engine_process import RunningEngine, as_user, model, start_engine, stop_engine
from nginx_edge import APP, STRANGERS, running_edge, spec_with, web_channel

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def preflight(base: str, origin: str, path: str = "/api/v1/chat") -> httpx.Response:
    return httpx.options(base + path, headers={"Origin": origin, **PREFLIGHT}, timeout=10)


def chat(base: str, origin: str, **headers: str) -> httpx.Response:
    return httpx.post(base + "/api/v1/chat", json={"message": "hi"}, headers={"Origin": origin, **headers}, timeout=10)


@pytest.fixture(scope="module")
def engine(module_dir: Path) -> Iterator[RunningEngine]:
    running = start_engine(module_dir / "cors", [model("local")], channels=web_channel([APP], module_dir))
    yield running
    stop_engine(running)


@pytest.fixture(scope="module")
def edge(engine: RunningEngine, module_dir: Path) -> Iterator[str]:
    """nginx rendered from the same spec, in front of that engine; its base URL."""
    with running_edge(engine, module_dir / "edge") as base:
        yield base


@pytest.fixture(params=["engine", "nginx"])
def base(request: pytest.FixtureRequest, engine: RunningEngine) -> str:
    return engine.url if request.param == "engine" else request.getfixturevalue("edge")


def test_a_preflight_from_an_allowed_origin_gets_the_access_control_headers(base) -> None:
    response = preflight(base, APP)
    assert response.status_code == 200, response.text
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == APP
    assert {"POST", "GET", "DELETE"} <= {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in headers  # keys travel in Authorization, never cookies
    assert "Origin" in response.headers.get("vary", "")


@pytest.mark.parametrize("origin", STRANGERS)
def test_a_preflight_from_another_origin_gets_no_access_control_header(base, origin) -> None:
    response = preflight(base, origin)
    assert response.status_code >= 400 and cors_headers(response) == {}


def test_an_actual_request_from_an_allowed_origin_carries_allow_origin(base) -> None:
    response = chat(base, APP)
    assert response.status_code == 200, response.text
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == APP
    assert "x-request-id" in headers["access-control-expose-headers"].lower()  # the page can quote it
    assert "access-control-allow-credentials" not in headers
    # An error is readable by the page too: it can show why, not a bare network error.
    refused = chat(base, APP, Authorization="Bearer not-a-token")
    assert refused.status_code == 401 and cors_headers(refused)["access-control-allow-origin"] == APP


def test_an_actual_request_from_another_origin_gets_no_access_control_header(base) -> None:
    for origin in STRANGERS:
        response = chat(base, origin, **as_user("alice"))
        assert response.status_code == 200 and cors_headers(response) == {}, origin  # the browser hides it


def test_the_engine_and_nginx_give_a_browser_the_same_answer(engine, edge) -> None:
    for origin in [APP, *STRANGERS]:
        direct, proxied = preflight(engine.url, origin), preflight(edge, origin)
        assert (direct.status_code, cors_headers(direct)) == (proxied.status_code, cors_headers(proxied)), origin
        direct, proxied = chat(engine.url, origin), chat(edge, origin)
        assert cors_headers(direct) == cors_headers(proxied), origin


def test_without_cors_origins_no_origin_is_answered(engine_factory, tmp_path) -> None:
    running = engine_factory([model("local")], name="none", channels=web_channel([], tmp_path))
    assert cors_headers(preflight(running.url, APP)) == {}
    assert cors_headers(chat(running.url, APP)) == {}


def test_a_wildcard_allows_every_origin_without_credentials(engine_factory, tmp_path) -> None:
    running = engine_factory([model("local")], name="any", channels=web_channel(["*"], tmp_path))
    for origin in (APP, "https://anyone.example.org"):
        headers = cors_headers(preflight(running.url, origin))
        assert headers["access-control-allow-origin"] in ("*", origin)
        assert "access-control-allow-credentials" not in headers
        assert cors_headers(chat(running.url, origin))["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com/",  # a path (even "/") is no origin: a browser never sends one
        "https://app.example.com/chat",
        "https://app.example.com;",
        'https://app.example.com"; add_header X-Evil 1; "',
        "https://app.example.com\nadd_header X-Evil 1;",
        "https://app.example.com }",
        "https://*.example.com",
        "*.example.com",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "https://app.example.com:99999",
        "https://APP.example.com",  # browsers send the host in lower case: this one never matches
        "null",
        "",
    ],
)
def test_the_schema_refuses_what_is_not_an_exact_origin(origin, tmp_path) -> None:
    with pytest.raises(SpecError):
        spec_with([origin], tmp_path)


def test_a_wildcard_stands_alone(tmp_path) -> None:
    with pytest.raises(SpecError):
        spec_with(["*", APP], tmp_path)


@pytest.mark.parametrize(
    "origin", [APP, "http://localhost:3000", "http://127.0.0.1:8080", "https://[::1]:8443", "https://a-b.c.example"]
)
def test_exact_origins_reach_the_engine_and_never_the_nginx_files(origin, tmp_path) -> None:
    target = spec_with([origin], tmp_path)
    web = next(c for c in build_settings(target).channels if c.name == "web")
    assert web.cors_origins == [origin]
    assert not [name for name, text in render_nginx(target).items() if origin in text]
