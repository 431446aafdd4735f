"""An engine-only host listens beyond loopback: it answers its edges, holding the shared secret, only."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from addresses import machine_address
from assistantctl.engine.settings import SecuritySettings
from engine_process import TEST_JWT_KEY, TEST_JWT_SECRET, RunningEngine, StartEngine, as_user, model

SECRET = "edge-shared-secret-of-some-length"


def guarded(engine_factory: StartEngine, edges: list[str]) -> RunningEngine:
    security = SecuritySettings(jwt_secret=TEST_JWT_SECRET, edge_addresses=edges, edge_secret="security.edge_secret")
    return engine_factory(
        [model("local")],
        name="guarded-" + "-".join(edges),
        listen_host="0.0.0.0",
        security=security,
        secrets={TEST_JWT_SECRET: TEST_JWT_KEY, "security.edge_secret": SECRET},
    )


def post(engine: RunningEngine, headers: dict[str, str]) -> httpx.Response:
    port = engine.url.rsplit(":", 1)[1]
    url = f"http://{machine_address()}:{port}/api/v1/chat"
    return httpx.post(url, json={"message": "hi"}, headers=headers, timeout=10)


@pytest.fixture
def edge_engine(engine_factory: StartEngine) -> RunningEngine:
    return guarded(engine_factory, [machine_address()])


def test_an_edge_with_the_secret_is_admitted_and_its_forwarded_client_must_authenticate(edge_engine) -> None:
    edge = {"X-Assistant-Edge": SECRET}
    as_edge = post(edge_engine, {**edge, **as_user("kim")})
    forwarded = post(edge_engine, {**edge, "X-Forwarded-For": "203.0.113.7"})
    # The edge's own loopback client is the edge host's operator: the anonymous user.
    # (nginx passes on the name that client used: a loopback one; see test_auth on DNS rebinding)
    local_behind_edge = post(edge_engine, {**edge, "X-Forwarded-For": "127.0.0.1", "Host": "localhost"})
    assert as_edge.status_code == 200
    assert forwarded.status_code == 401
    assert local_behind_edge.status_code == 200


def test_without_the_secret_or_from_another_address_nothing_answers(edge_engine, engine_factory) -> None:
    missing = post(edge_engine, as_user("kim"))
    wrong = post(edge_engine, {"X-Assistant-Edge": "guess", **as_user("kim")})
    spoofed = post(edge_engine, {"X-Assistant-Edge": "guess", "X-Forwarded-For": "127.0.0.1"})
    elsewhere = guarded(engine_factory, ["198.51.100.99"])
    not_an_edge = post(elsewhere, {"X-Assistant-Edge": SECRET, **as_user("kim")})
    assert [r.status_code for r in (missing, wrong, spoofed, not_an_edge)] == [403] * 4
    assert all("answers its edges only" in r.text for r in (missing, wrong, not_an_edge))
    # Loopback (the host's own health checks) still passes.
    assert httpx.get(f"{edge_engine.url}/health", timeout=5).status_code == 200


def test_the_monitoring_networks_read_the_metrics_of_an_engine_only_host_and_nothing_else(engine_factory) -> None:
    """Prometheus scrapes an engine-only host where it listens: a peer in the metrics networks gets
    the metrics path without the edge secret, and is refused everything else."""
    security = SecuritySettings(
        jwt_secret=TEST_JWT_SECRET,
        edge_addresses=["198.51.100.99"],
        edge_secret="security.edge_secret",
        metrics_allow_networks=["127.0.0.0/8", f"{machine_address()}/32"],
    )
    engine = engine_factory(
        [model("local")],
        name="guarded-scraped",
        listen_host="0.0.0.0",
        security=security,
        secrets={TEST_JWT_SECRET: TEST_JWT_KEY, "security.edge_secret": SECRET},
    )
    port = engine.url.rsplit(":", 1)[1]
    scraped = httpx.get(f"http://{machine_address()}:{port}/metrics", timeout=10)
    assert scraped.status_code == 200 and "assistant_http_requests_total" in scraped.text
    assert post(engine, as_user("kim")).status_code == 403
    base = f"http://{machine_address()}:{port}"
    others = [
        httpx.get(f"{base}/api/v1/history", timeout=10),
        httpx.get(f"{base}/metrics/", timeout=10),
        httpx.get(f"{base}/openapi.json", timeout=10),
        httpx.head(f"{base}/metrics", timeout=10),
    ]
    assert [r.status_code for r in others] == [403] * len(others)
    with pytest.raises(InvalidStatus) as refused:  # a websocket handshake is no scrape either
        connect(f"ws://{machine_address()}:{port}/metrics", open_timeout=10)
    assert refused.value.response.status_code == 403
    # Not in the metrics networks: refused before routing, like any other stranger.
    closed = guarded(engine_factory, ["198.51.100.99"])
    closed_port = closed.url.rsplit(":", 1)[1]
    assert httpx.get(f"http://{machine_address()}:{closed_port}/metrics", timeout=10).status_code == 403
