"""A virtual IP moved by keepalived between two SSH hosts when the master stops serving.

keepalived runs under each HA host's supervisord and tracks `/health` through the host's nginx.
The engine keeps its history in SQLite (postgres is not implemented by the engine yet) and the spec
refuses two engines on SQLite, so the HA pair is two edges (nginx + keepalived) in front of one
engine host, `core`: the failure injected is the master's nginx stopping (`supervisorctl stop`).
"""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import FleetDeployment

pytestmark = pytest.mark.slow

ROLES = {"core": ["engine"], "ha-a": ["edge"], "ha-b": ["edge"]}
SWITCH_LIMIT_SECONDS = 20


@pytest.fixture(scope="module")
def pair(make_fleet, tmp_path_factory) -> FleetDeployment:
    fleet = make_fleet(list(ROLES))
    ha = {"virtual_ip": fleet.address(100), "interface": "eth0", "router_id": 77, "hosts": ["ha-a", "ha-b"]}
    deployment = FleetDeployment(fleet, tmp_path_factory.mktemp("ha-spec"), ROLES, serial=3, ha=ha)
    first, seconds = deployment.timed("apply")
    print(f"\nfirst apply of the HA fleet (3 SSH hosts, serial 3): {seconds:.1f} s")
    assert first.returncode == 0, first.stdout + first.stderr
    return deployment


def vip_holders(pair: FleetDeployment) -> list[str]:
    """The HA hosts that carry the virtual IP: one when settled, briefly two while one takes over."""
    vip = pair.data["deploy"]["ha"]["virtual_ip"]
    return [
        name
        for name in ("ha-a", "ha-b")
        if f" {vip}/" in pair.host(name).run("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    ]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(pair: FleetDeployment, holder: str, url: str, limit: float) -> tuple[float, int, int]:
    """Poll the VIP every 0.1 s until `holder` has it and it answers: (seconds, failed, total)."""
    start, failed, total = time.monotonic(), 0, 0
    while time.monotonic() - start < limit:
        ok = answers(url)
        total += 1
        failed += not ok
        if ok and vip_holders(pair) == [holder]:
            return time.monotonic() - start, failed, total
        time.sleep(0.1)
    raise AssertionError(f"the virtual IP did not move to {holder} within {limit} s (now on {vip_holders(pair)})")


def test_the_virtual_ip_moves_to_the_backup_and_back_when_the_master_stops_serving(pair):
    vip_url = f"http://{pair.data['deploy']['ha']['virtual_ip']}:8080/health"
    python = pair.data["deploy"]["hosts"][0]["python"]
    settled, _, _ = wait_for(pair, "ha-a", vip_url, SWITCH_LIMIT_SECONDS)
    print(f"\nvirtual IP on the master ha-a {settled:.1f} s after apply returned")
    status = pair.host("ha-b").supervisorctl(python, "status", "keepalived").stdout
    assert "RUNNING" in status, status

    pair.host("ha-a").supervisorctl(python, "stop", "nginx")
    failover, failed, total = wait_for(pair, "ha-b", vip_url, SWITCH_LIMIT_SECONDS)
    print(f"failover to ha-b: {failover:.1f} s, {failed} of {total} requests to the VIP failed meanwhile")
    steady = [answers(vip_url) for _ in range(20)]
    assert all(steady), f"requests to the VIP failed after the switch: {steady}"
    assert vip_holders(pair) == ["ha-b"]

    pair.host("ha-a").supervisorctl(python, "start", "nginx")
    failback, failed_back, total_back = wait_for(pair, "ha-a", vip_url, SWITCH_LIMIT_SECONDS)
    print(f"back to ha-a: {failback:.1f} s, {failed_back} of {total_back} requests failed meanwhile")
    steady = [answers(vip_url) for _ in range(20)]
    assert all(steady), f"requests to the VIP failed after the master came back: {steady}"
    assert vip_holders(pair) == ["ha-a"]
    chat = httpx.post(
        f"http://{pair.data['deploy']['ha']['virtual_ip']}:8080/api/v1/chat", json={"message": "hi"}, timeout=10
    )
    assert chat.status_code == 200
    notify_log = pair.host("ha-b").path("logs/keepalived-notify.log").read_text()
    assert "state=MASTER" in notify_log and "state=BACKUP" in notify_log, notify_log
