"""Grafana on monitoring hosts: `grafana.ini`, provisioning of the Prometheus datasource and of the
dashboard folder, and `dashboards/assistant.json`.

Panels read the recording rules of `prometheus.py` where one exists (cheap queries, one definition
of "error ratio"), raw metrics otherwise. The datasource has a fixed uid that every panel names,
so the dashboard never depends on Grafana's "default datasource".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..schema.spec import Spec
from . import prometheus as prom
from .base import Files, Renderer, Target
from .prometheus import dump_yaml
from .templating import render_template

DATASOURCE_UID = "assistant-prometheus"
DASHBOARD_UID = "assistant-overview"
DASHBOARD_FILE = "assistant.json"
ADMIN_PASSWORD_SECRET = "monitoring.grafana.admin_password"
SECRETS_DIR = "secrets"
PANEL_WIDTH, PANEL_HEIGHT, COLUMNS = 12, 8, 2
SCHEMA_VERSION = 37
TOOL_BUCKETS = "assistant_tool_call_duration_seconds_bucket"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    description: str = ""


def panels(spec: Spec) -> list[Panel]:
    w = prom.rate_window(spec)
    per_host = "{{host}}"
    return [
        Panel("Request rate", "reqps", ((f"{prom.REQUEST_RATE}{w}", per_host),)),
        Panel("Error rate (5xx)", "percentunit", ((f"{prom.ERROR_RATIO}{w}", per_host),)),
        Panel("Latency p50 / p95 / p99", "s", ((f"{prom.LATENCY_QUANTILE}{w}", "{{host}} p{{quantile}}"),)),
        Panel(
            "Model success rate",
            "percentunit",
            ((f"{prom.MODEL_SUCCESS_RATIO}{w}", "{{model}}"),),
            "Share of model calls that succeeded; error, timeout and rejected count as failures.",
        ),
        Panel("Model calls by outcome", "reqps", ((f"{prom.MODEL_CALL_RATE}{w}", "{{model}} {{outcome}}"),)),
        Panel(
            "Tokens in / out",
            "short",
            ((f"{prom.TOKEN_RATE}{w}", "{{model}} {{direction}}"),),
            "Tokens per second by model and direction.",
        ),
        Panel(
            "Active WebSocket connections", "short", (("sum by (host) (assistant_websocket_connections)", per_host),)
        ),
        Panel(
            "Queue depth",
            "short",
            (("sum by (host) (assistant_queue_depth)", per_host),),
            "Requests waiting for a model slot.",
        ),
        Panel("Rate-limited requests", "reqps", ((f"{prom.RATE_LIMITED_RATE}{w}", "{{route}}"),)),
        Panel("Open circuit breakers", "short", (("max by (model) (assistant_model_breaker_open)", "{{model}}"),)),
        Panel(
            "Limit refusals",
            "reqps",
            ((f"sum by (limit) (rate(assistant_limit_refusals_total[{w}]))", "{{limit}}"),),
            "Requests refused, by the limit that refused them (rate, global, model quota, budget).",
        ),
        Panel(
            "Tool calls by outcome",
            "reqps",
            ((f"sum by (tool, outcome) (rate(assistant_tool_calls_total[{w}]))", "{{tool}} {{outcome}}"),),
        ),
        Panel(
            "Tool latency p95",
            "s",
            ((f"histogram_quantile(0.95, sum by (tool, le) (rate({TOOL_BUCKETS}[{w}])))", "{{tool}}"),),
        ),
        Panel(
            "CPU used",
            "percentunit",
            ((f'1 - avg by (host) (rate(node_cpu_seconds_total{{mode="idle"}}[{w}]))', per_host),),
        ),
        Panel(
            "Memory used",
            "percentunit",
            (("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", per_host),),
        ),
    ]


def _datasource_ref() -> dict:
    return {"type": "prometheus", "uid": DATASOURCE_UID}


def _panel_json(index: int, panel: Panel) -> dict:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": _datasource_ref(),
        "gridPos": {
            "h": PANEL_HEIGHT,
            "w": PANEL_WIDTH,
            "x": (index % COLUMNS) * PANEL_WIDTH,
            "y": (index // COLUMNS) * PANEL_HEIGHT,
        },
        "fieldConfig": {"defaults": {"unit": panel.unit, "min": 0}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {"datasource": _datasource_ref(), "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard(spec: Spec) -> dict:
    return {
        "uid": DASHBOARD_UID,
        "title": f"{spec.name}: overview",
        "tags": ["assistantctl"],
        "editable": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "panels": [_panel_json(i, p) for i, p in enumerate(panels(spec))],
        "templating": {"list": []},
        "annotations": {"list": []},
    }


def _datasources(target: Target) -> dict:
    spec = target.spec
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": f"http://127.0.0.1:{spec.monitoring.prometheus.port}",
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": f"{spec.monitoring.prometheus.scrape_interval_seconds}s"},
            }
        ],
    }


def _dashboard_provider(target: Target) -> dict:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "assistantctl",
                "orgId": 1,
                "type": "file",
                "folder": target.spec.name,
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": f"{target.current}/grafana/dashboards", "foldersFromFilesStructure": False},
            }
        ],
    }


def render(target: Target) -> Files:
    has_password = target.spec.monitoring.grafana.admin_password is not None
    own = f"{target.current}/grafana"
    return {
        "grafana.ini": render_template(
            "grafana/grafana.ini.j2",
            config=f"{own}/grafana.ini",
            data=target.path("data", "grafana"),
            logs=target.path("logs"),
            provisioning=f"{own}/provisioning",
            port=target.spec.monitoring.grafana.port,
            admin_password_file=f"{own}/{SECRETS_DIR}/{ADMIN_PASSWORD_SECRET}" if has_password else None,
            home_dashboard=f"{own}/dashboards/{DASHBOARD_FILE}",
        ),
        "provisioning/datasources/prometheus.yml": dump_yaml(_datasources(target)),
        "provisioning/dashboards/assistant.yml": dump_yaml(_dashboard_provider(target)),
        f"dashboards/{DASHBOARD_FILE}": json.dumps(dashboard(target.spec), sort_keys=True, indent=2) + "\n",
    }


def secret_files(target: Target, values: dict[str, str]) -> Files:
    if ADMIN_PASSWORD_SECRET not in values:
        return {}
    return {f"{SECRETS_DIR}/{ADMIN_PASSWORD_SECRET}": values[ADMIN_PASSWORD_SECRET]}


# Grafana has no offline config check (`grafana server` only finds a bad file once it runs, and then
# logs and carries on). So the staged folder is checked structurally, by the host's interpreter:
# grafana.ini parses with a numeric port, each provisioning file is apiVersion 1 with the fields
# Grafana needs, and every panel of every dashboard names a provisioned datasource.
_CHECK_SCRIPT = """
import configparser, json, pathlib, sys, yaml
d = pathlib.Path(sys.argv[1])
ini = configparser.ConfigParser(interpolation=None)
ini.read_string((d / "grafana.ini").read_text())
int(ini["server"]["http_port"])
def provisioned(kind):
    for f in sorted((d / "provisioning" / kind).glob("*.yml")):
        data = yaml.safe_load(f.read_text())
        assert data["apiVersion"] == 1, f"{f}: apiVersion must be 1"
        yield from data[kind if kind == "datasources" else "providers"]
uids = {s["uid"] for s in provisioned("datasources") if s["name"] and s["type"] and s["url"]}
assert all(p["type"] == "file" and p["options"]["path"] for p in provisioned("dashboards"))
for f in sorted((d / "dashboards").glob("*.json")):
    board = json.loads(f.read_text())
    assert board["uid"], f"{f}: no uid"
    for panel in board["panels"]:
        title = panel["title"]
        for target in panel["targets"]:
            uid = target["datasource"]["uid"]
            assert uid in uids, f"{f}: panel {title!r} reads datasource {uid!r}, not provisioned"
"""
CHECK = "{python} -c '" + _CHECK_SCRIPT.strip() + "' {dir}"

RENDERER = Renderer(
    name="grafana",
    service="grafana",
    render=render,
    applies=lambda t: t.has_role("monitoring") and t.spec.monitoring.grafana.enabled,
    check=CHECK,
    secret_files=secret_files,
)
