"""renderers/grafana.py: Grafana itself is not installable here (docs/ENVIRONMENT), so the dashboard
is checked structurally and every panel's PromQL goes through the real promtool."""

from __future__ import annotations

import configparser
import json
import shlex
import subprocess
import sys

import pytest
import yaml

from assistantctl.renderers import render_target
from assistantctl.renderers.grafana import ADMIN_PASSWORD_SECRET, RENDERER, render, secret_files
from assistantctl.renderers.prometheus import recording_rules
from monitoring_fixtures import ALL_ON, assert_ok, metric_names, monitoring_overrides, run, unknown_metrics

DASHBOARD = "dashboards/assistant.json"
DATASOURCES = "provisioning/datasources/prometheus.yml"
PROVIDERS = "provisioning/dashboards/assistant.yml"


@pytest.fixture
def target(make_target):
    grafana = {"enabled": True, "port": 3300, "admin_password": "${env:GRAFANA_ADMIN}"}
    return make_target(monitoring_overrides(**{**ALL_ON, "grafana": grafana}))


@pytest.fixture
def files(target) -> dict[str, str]:
    return render(target)


def panel_exprs(files: dict[str, str]) -> list[str]:
    return [t["expr"] for p in json.loads(files[DASHBOARD])["panels"] for t in p["targets"]]


def test_applies_only_on_monitoring_hosts_with_grafana_enabled(make_target, target):
    assert not RENDERER.applies(make_target())
    assert not RENDERER.applies(make_target(monitoring_overrides()))
    assert RENDERER.applies(target)


def test_datasource_points_at_local_prometheus_with_a_fixed_uid(files):
    (source,) = yaml.safe_load(files[DATASOURCES])["datasources"]
    assert source["url"] == "http://127.0.0.1:9090"
    assert source["type"] == "prometheus" and source["uid"] and source["isDefault"] is True


def test_dashboard_provider_reads_the_live_release(files, target):
    (provider,) = yaml.safe_load(files[PROVIDERS])["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == f"{target.root}/current/grafana/dashboards"
    assert DASHBOARD.startswith("dashboards/")  # the folder that path names, inside grafana/


def test_panels_have_unique_ids_and_non_overlapping_grid_positions(files):
    dashboard = json.loads(files[DASHBOARD])
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and 0 <= g["x"] and g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"panel {p['title']!r} overlaps another"
        cells |= area
    assert dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)


def test_every_panel_and_query_uses_the_provisioned_datasource(files):
    uid = yaml.safe_load(files[DATASOURCES])["datasources"][0]["uid"]
    for panel in json.loads(files[DASHBOARD])["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])


def test_dashboard_covers_the_operational_questions(files):
    titles = " | ".join(p["title"] for p in json.loads(files[DASHBOARD])["panels"]).lower()
    for needed in (
        "request rate",
        "error rate",
        "p50",
        "p95",
        "p99",
        "model success",
        "tokens",
        "websocket",
        "queue depth",
        "rate-limited",
        "cpu",
        "memory",
    ):
        assert needed in titles, needed


def test_every_panel_query_is_valid_promql(files, tmp_path):
    rules = [{"record": f"panel:check:{i}", "expr": expr} for i, expr in enumerate(panel_exprs(files))]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = run("promtool", "check", "rules", path)
    assert_ok(result)
    assert f"{len(rules)} rules found" in result.stdout


def test_panels_read_contract_metrics_or_rules_prometheus_records(files, target):
    recorded = {r.record for r in recording_rules(target.spec)}
    exprs = panel_exprs(files)
    assert unknown_metrics(exprs, recorded) == {}
    used = set().union(*map(metric_names, exprs))
    assert {n for n in used if ":" in n} <= recorded, "a panel reads a recording rule that is not rendered"


def test_admin_password_is_a_file_reference_never_a_value(files, target):
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(files["grafana.ini"])
    path = f"{target.root}/current/grafana/secrets/{ADMIN_PASSWORD_SECRET}"
    assert ini["security"]["admin_password"] == f"$__file{{{path}}}"
    assert ini["server"]["http_port"] == "3300" and ini["server"]["http_addr"] == "127.0.0.1"
    assert ini["paths"]["provisioning"] == f"{target.root}/current/grafana/provisioning"
    assert "GRAFANA_ADMIN" not in "".join(files.values())
    assert secret_files(target, {ADMIN_PASSWORD_SECRET: "s3cret"}) == {f"secrets/{ADMIN_PASSWORD_SECRET}": "s3cret"}


def test_without_admin_password_grafana_keeps_its_default(make_target):
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(render(make_target(monitoring_overrides(grafana={"enabled": True})))["grafana.ini"])
    assert "admin_password" not in ini["security"]


def test_rendering_is_byte_identical_for_the_same_spec(target):
    first = render_target(target, only={"grafana"})
    assert first == render_target(target, only={"grafana"})
    assert first[f"grafana/{DASHBOARD}"].endswith("}\n")


def _check(target, tmp_path, break_it=None):
    """The renderer's check command, run as apply runs it, on a rendered copy of the grafana folder."""
    folder = tmp_path / "staged"
    for rel, text in render(target).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    if break_it:
        break_it(folder)
    command = RENDERER.check.replace("{dir}", str(folder)).replace("{python}", shlex.quote(sys.executable))
    return subprocess.run(shlex.split(command), capture_output=True, text=True, check=False, timeout=60)


def test_the_staged_grafana_folder_is_checked_before_the_switch(target, tmp_path):
    result = _check(target, tmp_path)
    assert result.returncode == 0, result.stderr


def _foreign_datasource(folder):
    path = folder / DASHBOARD
    board = json.loads(path.read_text())
    board["panels"][1]["targets"][0]["datasource"]["uid"] = "someone-elses"
    path.write_text(json.dumps(board))


def _bad_port(folder):
    path = folder / "grafana.ini"
    path.write_text(path.read_text().replace("http_port = 3300", "http_port = 33oo"))


def _old_api_version(folder):
    path = folder / PROVIDERS
    path.write_text(path.read_text().replace("apiVersion: 1", "apiVersion: 0"))


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (_foreign_datasource, "reads datasource 'someone-elses', not provisioned"),
        (_bad_port, "invalid literal for int()"),
        (_old_api_version, "apiVersion must be 1"),
    ],
)
def test_the_check_refuses_a_broken_grafana_folder(target, tmp_path, break_it, message):
    result = _check(target, tmp_path, break_it)
    assert result.returncode != 0 and message in result.stderr, result.stderr
