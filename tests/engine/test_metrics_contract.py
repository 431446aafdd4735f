"""The metric contract end to end: every series the rendered Prometheus rules and Grafana dashboard
read is exported by a running engine built from the same spec.

The one test that imports both the renderers and the engine's side: it renders a spec with
monitoring on, starts the engine from that spec's rendered settings, sends a few requests, and
compares the names in /metrics with the names the PromQL reads (node_exporter's `node_*`, `up`
and the rules' own recorded names excepted).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from assistantctl.engine.settings import EngineSettings
from assistantctl.renderers import Target, grafana, prometheus
from assistantctl.renderers.engine import build_settings
from assistantctl.schema.loader import parse_spec
from engine_process import RunningEngine, start_engine, stop_engine

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "assistant.yaml"
MONITORING = {
    "monitoring": {"prometheus": {"enabled": True}, "grafana": {"enabled": True}, "alertmanager": {"enabled": True}},
    "deploy": {"hosts": [{"name": "local", "connection": "local", "roles": ["engine", "edge", "monitoring"]}]},
}
# Settings the test harness decides (loopback port, folders under tmp); everything else is rendered.
_HARNESS_FIELDS = {"listen_host", "listen_port", "data_dir", "log_dir", "secrets_file", "models"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
_KEYWORDS |= {"inf", "nan"}
_IDENT = re.compile(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def _merged(base: dict, overrides: dict) -> dict:
    result = dict(base)
    for key, value in overrides.items():
        result[key] = _merged(result[key], value) if isinstance(value, dict) and key in result else value
    return result


@pytest.fixture(scope="module")
def target(module_dir: Path) -> Target:
    data = _merged(yaml.safe_load(DEFAULT_SPEC.read_text(encoding="utf-8")), MONITORING)
    spec = parse_spec(yaml.safe_dump(data, sort_keys=False))
    assert spec.monitoring.metrics.enabled
    return Target(spec=spec, host=spec.deploy.hosts[0], root=str(module_dir / "root"), python=sys.executable)


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression reads: identifiers that are not functions, keywords, label
    names (in `{}` or grouping clauses), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(match.group())
    return names


def rendered_queries(target: Target) -> tuple[list[str], set[str]]:
    """Every PromQL expression of the rendered rules and dashboard, and the recorded names."""
    files = prometheus.render(target)
    rules = [
        rule
        for name in (prometheus.ALERTS_FILE, prometheus.RECORDING_FILE)
        for group in yaml.safe_load(files[name])["groups"]
        for rule in group["rules"]
    ]
    board = json.loads(grafana.render(target)[f"dashboards/{grafana.DASHBOARD_FILE}"])
    exprs = [rule["expr"] for rule in rules] + [t["expr"] for p in board["panels"] for t in p["targets"]]
    return exprs, {rule["record"] for rule in rules if "record" in rule}


@pytest.fixture(scope="module")
def engine(target: Target, module_dir: Path) -> Iterator[RunningEngine]:
    settings = build_settings(target)
    rendered = {f: getattr(settings, f) for f in EngineSettings.model_fields if f not in _HARNESS_FIELDS}
    running = start_engine(module_dir / "engine", list(settings.models), **rendered)
    yield running
    stop_engine(running)


def exported_names(engine: RunningEngine, metrics_path: str) -> set[str]:
    with engine.client() as client:
        client.post("/api/v1/chat", json={"message": "count me"}).raise_for_status()
        # The builtin model calls the calculator for this: the tool series exist once a tool ran.
        client.post("/api/v1/chat", json={"message": "what is 6*7?"}).raise_for_status()
        client.post("/api/v1/chat/stream", json={"message": "and me"}).raise_for_status()
        client.get("/api/v1/history").raise_for_status()
        client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).raise_for_status()
        assert client.get("/api/v1/nothing-here").status_code == 404
        text = client.get(metrics_path).text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_series_the_rules_and_dashboard_read_is_exported_by_the_engine(
    target: Target, engine: RunningEngine
) -> None:
    exprs, recorded = rendered_queries(target)
    wanted = {
        name: [e for e in exprs if name in metric_names(e)]
        for expr in exprs
        for name in metric_names(expr)
        if name not in recorded and name != "up" and not name.startswith("node_")
    }
    assert {"assistant_http_requests_total", "assistant_websocket_connections"} <= wanted.keys()  # the parser works
    exported = exported_names(engine, target.spec.monitoring.metrics.path)
    missing = {name: used_by for name, used_by in wanted.items() if name not in exported}
    assert not missing, f"read by the monitoring configs but not in the engine's /metrics: {missing}"


def test_the_recorded_names_are_only_ones_the_rules_define(target: Target) -> None:
    exprs, recorded = rendered_queries(target)
    read = set().union(*map(metric_names, exprs))
    assert {n for n in read if ":" in n} <= recorded  # a dashboard reading a rule nobody records sees nothing


def test_the_engine_serves_metrics_where_prometheus_scrapes(target: Target, engine: RunningEngine) -> None:
    job = next(j for j in prometheus.build_config(target)["scrape_configs"] if j["job_name"] == "engine")
    response = httpx.get(engine.url + job["metrics_path"], timeout=5)
    assert response.status_code == 200 and "assistant_http_requests_total" in response.text
