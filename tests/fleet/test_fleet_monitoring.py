"""Monitoring that really runs on the hosts: Prometheus on a monitoring host scrapes every engine
where it listens and every host's node_exporter, and an alert reaches a webhook through Alertmanager.

Three SSH hosts: `edge` runs an engine behind its nginx (the engine listens on loopback, so it is
scraped through nginx's metrics route), `core` is an engine-only host (it answers its edges only,
and the monitoring host for its metrics path), `mon` runs Prometheus and Alertmanager. Two engines
share a real PostgreSQL history on the bridge. The alert's receiver is a webhook served by this
test on the bridge's own address, which the monitoring host reaches like any server on its network.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from postgres import start_postgres

from fleet_deployment import FleetDeployment

pytestmark = pytest.mark.slow

ROLES = {"edge": ["engine", "edge"], "core": ["engine"], "mon": ["monitoring"]}
DSN_ENV = "ASSISTANT_FLEET_PG_DSN"
HTTP_PORT, ENGINE_PORT, PROMETHEUS_PORT = 8080, 8081, 9090
SCRAPE_SECONDS = 2


class Webhook:
    """Alertmanager's webhook receiver: every POSTed notification, in arrival order."""

    def __init__(self, address: str):
        received: queue.Queue = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook_and_fleet(make_fleet, tmp_path_factory) -> Iterator[tuple[Webhook, FleetDeployment]]:
    fleet = make_fleet(list(ROLES))
    db = start_postgres(fleet.gateway, f"{fleet.address(0)}/24")
    hook = Webhook(fleet.gateway)
    try:
        state = {"history": "postgres", "postgres_dsn": f"${{env:{DSN_ENV}}}"}
        deployment = FleetDeployment(fleet, tmp_path_factory.mktemp("monitoring-spec"), ROLES, env={DSN_ENV: db.dsn})
        deployment.data["deploy"].update(serial=3, state=state, ports={"http": HTTP_PORT, "engine": ENGINE_PORT})
        deployment.data["monitoring"] = {
            **deployment.data.get("monitoring", {}),
            "prometheus": {"enabled": True, "port": PROMETHEUS_PORT, "scrape_interval_seconds": SCRAPE_SECONDS},
            # short grouping: an alert joining a group notified at start-up is not held for 5 minutes
            "alertmanager": {
                "enabled": True,
                "receivers": [{"name": "test", "kind": "webhook", "url": hook.url}],
                "group_wait_seconds": 1,
                "group_interval_seconds": 5,
            },
            # fire at the first failed scrape, so the test waits for Alertmanager's grouping only
            "alerts": {"instance_down_minutes": 0},
        }
        deployment.rewrite(deployment.data)
        first, seconds = deployment.timed("apply", "--auto-approve")
        print(f"\nfirst apply of engine, edge and monitoring hosts (3 SSH hosts): {seconds:.1f} s")
        assert first.returncode == 0, first.stdout + first.stderr
        yield hook, deployment
    finally:
        hook.close()
        db.stop()


def targets(deployment: FleetDeployment) -> list[dict]:
    """Prometheus's own view of its scrape targets, asked on the monitoring host (it listens on loopback)."""
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/targets?state=active"
    answer = deployment.host("mon").run("curl", "-sf", "--max-time", "5", url, check=False)
    if answer.returncode != 0:
        return []
    return json.loads(answer.stdout)["data"]["activeTargets"]


def wait_for_targets(deployment: FleetDeployment, timeout: float = 60) -> dict[tuple[str, str], dict]:
    """(job, host) -> target, once every target is up or `timeout` passed (then as they are)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {(t["labels"]["job"], t["labels"]["host"]): t for t in targets(deployment)}
        if (found and all(t["health"] == "up" for t in found.values())) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_prometheus_scrapes_every_engine_where_it_listens_and_every_hosts_node_exporter(webhook_and_fleet):
    _, deployment = webhook_and_fleet
    address = {name: deployment.host(name).address for name in ROLES}
    found = wait_for_targets(deployment)
    where = {key: (t["scrapeUrl"], t["health"], t["lastError"]) for key, t in found.items()}
    assert where == {
        # the edge's engine through the edge's nginx, the engine-only host where it listens
        ("engine", "edge"): (f"http://{address['edge']}:{HTTP_PORT}/metrics", "up", ""),
        ("engine", "core"): (f"http://{address['core']}:{ENGINE_PORT}/metrics", "up", ""),
        **{("node", name): (f"http://{address[name]}:9100/metrics", "up", "") for name in ROLES},
    }
    # node_exporter answers on the host's own address only, not on every interface.
    edge = deployment.host("edge")
    assert edge.run("curl", "-sf", "--max-time", "3", "http://127.0.0.1:9100/metrics", check=False).returncode != 0
    # nginx serves the metrics to the monitoring host only: the controller (the bridge's address) is refused.
    refused = httpx.get(f"http://{address['edge']}:{HTTP_PORT}/metrics", timeout=5)
    assert refused.status_code == 403


def test_a_stopped_edge_engine_reaches_the_webhook_through_alertmanager(webhook_and_fleet):
    hook, deployment = webhook_and_fleet
    assert all(t["health"] == "up" for t in wait_for_targets(deployment).values())
    edge = deployment.host("edge")
    stopped_at = datetime.now().astimezone()
    edge.supervisorctl(sys.executable, "stop", "engine")
    try:
        try:
            alert = _wait_for_alert(hook, "AssistantInstanceDown", "edge", stopped_at, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_alerting_state(deployment, hook)}") from None
        delay = time.time() - stopped_at.timestamp()
        print(f"\nInstanceDown of the edge's engine at the webhook {delay:.1f} s after the stop")
        assert alert["labels"]["job"] == "engine" and alert["labels"]["severity"] == "critical"
        assert alert["labels"]["instance"] == f"{edge.address}:{HTTP_PORT}"
    finally:
        edge.supervisorctl(sys.executable, "start", "engine")


def _wait_for_alert(hook: Webhook, name: str, host: str, after: datetime, timeout: float) -> dict:
    """The first firing alert `name` about `host` that started after `after` (an earlier one, from
    the hosts starting up one after the other, is not what the test caused)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            notification = hook.received.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        for alert in notification["alerts"]:
            seen.append((alert["labels"].get("alertname"), alert["labels"].get("host"), alert["status"]))
            started = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
            labels = alert["labels"]
            if labels.get("alertname") == name and labels.get("host") == host and alert["status"] == "firing":
                if started >= after:
                    return alert
    raise AssertionError(f"no firing {name} for {host} within {timeout} s; the webhook got {seen}")


def _alerting_state(deployment: FleetDeployment, hook: Webhook) -> str:
    """What Prometheus and Alertmanager say of their alerts and notifications, whether the monitoring
    host reaches the webhook, and Alertmanager's log: why no notification came."""
    mon = deployment.host("mon")
    asked = [f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/alerts", "http://127.0.0.1:9093/api/v2/alerts"]
    answers = [mon.run("curl", "-s", "--max-time", "5", url, check=False).stdout[:3000] for url in asked]
    metrics = mon.run("curl", "-s", "--max-time", "5", "http://127.0.0.1:9093/metrics", check=False).stdout
    answers.append("\n".join(line for line in metrics.splitlines() if line.startswith("alertmanager_notification")))
    probe = ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-d", '{"alerts": []}', hook.url]
    answers.append(f"webhook from mon: {mon.run(*probe, check=False).stdout}")
    log = mon.path("logs/alertmanager.out.log")
    tail = log.read_text()[-3000:] if log.exists() else "(no alertmanager log)"
    return "\n".join([*answers, tail])
