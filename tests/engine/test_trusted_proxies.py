"""Behind a proxy that is neither loopback nor an edge (the Kubernetes ingress controller): the
networks in `security.trusted_proxies` have their X-Forwarded-For believed, so each client behind
them is itself (its own per-IP rate limit bucket); anyone else's X-Forwarded-For is ignored."""

from __future__ import annotations

from ipaddress import ip_address

import httpx

from addresses import machine_address
from assistantctl.engine.settings import RateLimitSettings, SecuritySettings
from engine_process import TEST_JWT_KEY, TEST_JWT_SECRET, RunningEngine, StartEngine, as_user, model


def behind_a_proxy(engine_factory: StartEngine, trusted: list[str]) -> RunningEngine:
    return engine_factory(
        [model("local")],
        name="proxied-" + "-".join(n.replace("/", "_") for n in trusted),
        listen_host="0.0.0.0",
        rate_limit=RateLimitSettings(requests_per_minute=1, burst=1, key="ip"),
        security=SecuritySettings(jwt_secret=TEST_JWT_SECRET, trusted_proxies=trusted),
        secrets={TEST_JWT_SECRET: TEST_JWT_KEY},
    )


def statuses(engine: RunningEngine, clients: list[str]) -> list[int]:
    """One chat per client address, each sent as the proxy would send it (from this machine's address)."""
    port = engine.url.rsplit(":", 1)[1]
    url = f"http://{machine_address()}:{port}/api/v1/chat"
    headers = as_user("kim")
    return [
        httpx.post(url, json={"message": "hi"}, headers={**headers, "X-Forwarded-For": c}, timeout=10).status_code
        for c in clients
    ]


def test_a_trusted_proxys_clients_are_told_apart_by_their_forwarded_address(engine_factory: StartEngine) -> None:
    engine = behind_a_proxy(engine_factory, [f"{machine_address()}/32"])
    # A client's own claim to be elsewhere (the left part) is not believed: the proxy appended the truth.
    clients = ["203.0.113.7", "203.0.113.8", "203.0.113.7", "198.51.100.1, 203.0.113.8"]
    assert statuses(engine, clients) == [200, 200, 429, 429]


def test_an_untrusted_peers_forwarded_address_is_ignored(engine_factory: StartEngine) -> None:
    engine = behind_a_proxy(engine_factory, [f"{ip_address(machine_address()) + 1}/32"])  # another proxy
    assert statuses(engine, ["203.0.113.7", "203.0.113.8"]) == [200, 429]  # one client: the peer itself
