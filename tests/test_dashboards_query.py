"""Every Grafana panel query returns data from a real Prometheus that scraped a real engine.

A real engine (the builtin offline model, which calls the calculator tool) gets traffic on
loopback: answered chats, a tool call, a refused request (a tiny per-user rate limit). A real
`prometheus` in a temporary folder scrapes it and a real `prometheus-node-exporter` every second,
with the rendered recording rules. Then each panel expression of the rendered dashboard, with
Grafana's interval variables replaced by concrete values, goes through `promtool query instant`:
a panel whose metric nobody exports, or whose query is wrong, returns nothing and fails."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from assistantctl.engine.settings import RateLimitSettings
from assistantctl.renderers import Target, grafana, prometheus
from assistantctl.schema.loader import parse_spec
from cli_helpers import default_spec, free_port
from processes import stop_process

sys.path.insert(0, str(Path(__file__).parent / "engine"))  # the engine's test helpers, shared with tests/engine
from engine_process import RunningEngine, as_user, model, start_engine, stop_engine  # noqa: E402

SCRAPE_SECONDS = 1
USERS = itertools.count(1)
# Grafana's own variables, as a dashboard with a 1 s scrape interval would see them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: apt-get install prometheus prometheus-node-exporter")
    return found


def monitoring_target(root: Path) -> Target:
    data = default_spec()
    data["monitoring"]["prometheus"] = {"enabled": True, "scrape_interval_seconds": SCRAPE_SECONDS}
    data["monitoring"]["grafana"] = {"enabled": True}
    data["deploy"]["hosts"] = [{"name": "local", "connection": "local", "roles": ["engine", "edge", "monitoring"]}]
    spec = parse_spec(yaml.safe_dump(data, sort_keys=False))
    return Target(spec=spec, host=spec.deploy.hosts[0], root=str(root), python=sys.executable)


def panel_queries(target: Target) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of the rendered dashboard."""
    board = json.loads(grafana.render(target)[f"dashboards/{grafana.DASHBOARD_FILE}"])
    queries = []
    for panel in board["panels"]:
        for query in panel["targets"]:
            expr = query["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unknown Grafana variable in {panel['title']!r}: {expr}"
            queries.append((panel["title"], expr))
    return queries


def wait_http(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{process.args[0]} did not answer {url}: {log.read_text()[-2000:]}")


def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Iterator[RunningEngine]:
    # Three requests a minute per user: the fourth chat of one user is refused (429).
    limit = RateLimitSettings(requests_per_minute=3, burst=3, key="user")
    running = start_engine(tmp_path_factory.mktemp("engine"), [model("local")], rate_limit=limit)
    yield running
    stop_engine(running)


@pytest.fixture(scope="module")
def scraped(engine: RunningEngine, tmp_path_factory) -> Iterator[tuple[str, Target]]:
    """The Prometheus URL once it has scraped the engine during traffic, and the rendered target."""
    folder = tmp_path_factory.mktemp("prometheus")
    target = monitoring_target(folder / "root")
    files = prometheus.render(target)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    # The rendered jobs, pointed at this test's engine and node exporter (free ports).
    config = yaml.safe_load(files["prometheus.yml"])
    node_port, prom_port = free_port(), free_port()
    addresses = {"engine": engine.url.removeprefix("http://"), "node": f"127.0.0.1:{node_port}"}
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [addresses[job["job_name"]]]
    config.pop("alerting", None)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    processes = []
    try:
        node_log = folder / "node.log"
        node_cmd = [tool("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{node_port}"]
        processes.append(spawn(node_cmd, node_log))
        wait_http(f"http://127.0.0.1:{node_port}/metrics", processes[-1], node_log)
        prom_log = folder / "prometheus.log"
        prom_cmd = [
            tool("prometheus"),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ]
        processes.append(spawn(prom_cmd, prom_log))
        url = f"http://127.0.0.1:{prom_port}"
        wait_http(f"{url}/-/ready", processes[-1], prom_log)
        traffic(engine)
        yield url, target
    finally:
        for process in reversed(processes):
            stop_process(process, grace=10)


def traffic(engine: RunningEngine, seconds: float = 6 * SCRAPE_SECONDS) -> None:
    """Keep the engine busy for `seconds` (several scrapes): chats, the calculator, refusals, 404s."""
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=engine.url, timeout=10) as client:
        while time.monotonic() < deadline:
            user = as_user(f"user{next(USERS)}")  # a fresh user: its first chats are within the limit
            assert client.post("/api/v1/chat", json={"message": "hello"}, headers=user).status_code == 200
            tools = client.post("/api/v1/chat", json={"message": "what is 6*7?"}, headers=user).json()["tools"]
            assert [t["name"] for t in tools] == ["calculator"]
            statuses = {client.post("/api/v1/chat", json={"message": "x"}, headers=user).status_code for _ in range(3)}
            assert 429 in statuses
            client.get("/nowhere")
            time.sleep(0.2)


def instant(url: str, expr: str) -> list:
    result = subprocess.run(
        [tool("promtool"), "query", "instant", "-o", "json", url, expr],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"{expr}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def test_every_panel_query_returns_data_from_a_prometheus_that_scraped_a_real_engine(scraped):
    url, target = scraped
    queries = panel_queries(target)
    empty = dict(queries)
    deadline = time.monotonic() + 60  # rates need two scrapes, recording rules one evaluation more
    while empty and time.monotonic() < deadline:
        empty = {title: expr for title, expr in empty.items() if not instant(url, expr)}
        time.sleep(SCRAPE_SECONDS)
    assert empty == {}, "panels without data"


def test_tool_and_limit_panels_show_what_the_engine_did(scraped, engine):
    url, target = scraped
    exprs = {title: expr for title, expr in panel_queries(target)}
    calls = {"Tool calls by outcome", "Tool latency p95", "Limit refusals"} - set(exprs)
    assert calls == set(), "dashboard lacks panels for these metrics"
    # A rate needs two samples around an increase, and on a loaded machine scrapes can time out
    # (after one interval) while the engine is busy: traffic goes on until Prometheus has seen it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        traffic(engine, seconds=SCRAPE_SECONDS)
        tools = instant(url, exprs["Tool calls by outcome"])
        by_tool = {(s["metric"].get("tool"), s["metric"].get("outcome")) for s in tools if float(s["value"][1]) > 0}
        limits = {s["metric"].get("limit"): float(s["value"][1]) for s in instant(url, exprs["Limit refusals"])}
        if ("calculator", "ok") in by_tool and limits.get("rate_limit", 0) > 0:
            return
    up = [(s["metric"].get("job"), s["value"][1]) for s in instant(url, "up")]
    pytest.fail(f"tool calls {by_tool}, limit refusals {limits}, up {up}")
