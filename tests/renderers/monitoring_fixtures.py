"""Helpers shared by the Prometheus, Alertmanager and Grafana renderer tests: spec overrides for a
monitoring host, the real tools (failing loudly when missing), and the metric-name contract."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

import assistantctl.engine.metrics as engine_metrics
import assistantctl.engine.tools.call as engine_tool_calls

PROMQL_FUNCTIONS_AND_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_IDENT = re.compile(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def monitoring_overrides(**monitoring: dict) -> dict:
    """Overrides for `make_target`: the one host also has the monitoring role; `monitoring` merges
    into the spec's monitoring section (e.g. prometheus={"enabled": True})."""
    return {
        "monitoring": monitoring,
        "deploy": {"hosts": [{"name": "local", "connection": "local", "roles": ["engine", "edge", "monitoring"]}]},
    }


ALL_ON = {"prometheus": {"enabled": True}, "alertmanager": {"enabled": True}, "grafana": {"enabled": True}}


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} is not installed: apt-get install prometheus prometheus-alertmanager "
            "(these tests need the real binary)"
        )
    return found


def run(name: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool(name), *map(str, args)], check=False, capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"


def engine_sample_names() -> set[str]:
    """Every series name the engine can expose, from the engine's own metric objects."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    # The tool metrics live beside the tool loop (engine/tools/call.py), not in engine/metrics.py.
    for value in [*vars(engine_metrics).values(), *vars(engine_tool_calls).values()]:
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.update(family.name + s for s in suffixes[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, keywords, label names
    (inside `{}` or grouping clauses), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if match.group().lower() not in PROMQL_FUNCTIONS_AND_KEYWORDS:
            names.add(match.group())
    return names


def unknown_metrics(exprs: list[str], recorded: set[str]) -> dict[str, set[str]]:
    """Per expression, the names that are neither the engine's, node_exporter's, `up` nor recorded."""
    allowed = engine_sample_names() | recorded | {"up"}
    found = {}
    for expr in exprs:
        bad = {n for n in metric_names(expr) if n not in allowed and not n.startswith("node_")}
        if bad:
            found[expr] = bad
    return found
