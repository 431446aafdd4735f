"""renderers/prometheus.py against the real promtool: the config and both rule files load, and
generated `promtool test rules` cases prove each alert fires past its threshold and `for`, and
stays silent below it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from assistantctl.renderers import render_target
from assistantctl.renderers.prometheus import RENDERER, alert_rules, recording_rules, render, slow_bucket
from monitoring_fixtures import (
    assert_ok,
    engine_sample_names,
    metric_names,
    monitoring_overrides,
    run,
    unknown_metrics,
)

THRESHOLDS = {
    "error_rate_percent": 5,
    "slow_request_seconds": 1,
    "slow_request_percent": 10,
    "p99_latency_seconds": 2,
    "model_failure_percent": 5,
    "disk_used_percent": 80,
    "memory_used_percent": 90,
    "cpu_used_percent": 70,
    "for_minutes": 3,
    "instance_down_minutes": 2,
}
ENGINE_A = {"job": "engine", "host": "a", "instance": "a:8081"}
ENGINE_B = {"job": "engine", "host": "b", "instance": "b:8081"}
NODE_A = {"job": "node", "host": "a", "instance": "a:9100"}
NODE_B = {"job": "node", "host": "b", "instance": "b:9100"}


def stage(target, write_files, folder: Path) -> Path:
    return write_files(folder / "prometheus", render(target))


def series(name: str, labels: dict[str, str], values: str) -> dict:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def http(labels, status, values):
    return series(
        "assistant_http_requests_total", {**labels, "route": "/api/v1/chat", "method": "POST", "status": status}, values
    )


def buckets(labels, per_le: dict[str, str]):
    return [
        series("assistant_http_request_duration_seconds_bucket", {**labels, "route": "/api/v1/chat", "le": le}, v)
        for le, v in per_le.items()
    ]


def calls(model, outcome, values):
    return series("assistant_model_calls_total", {**ENGINE_A, "model": model, "outcome": outcome}, values)


def filesystem(labels, device, fstype, mountpoint, avail, size):
    fs = {**labels, "device": device, "fstype": fstype, "mountpoint": mountpoint}
    return [series("node_filesystem_avail_bytes", fs, avail), series("node_filesystem_size_bytes", fs, size)]


def _p99_case():
    slow = {le: "0x30" for le in ("0.1", "0.25", "0.5", "1.0", "2.0")} | {"5.0": "0+10x30", "+Inf": "0+10x30"}
    fast = {"0.1": "0x30"} | {le: "0+10x30" for le in ("0.25", "0.5", "1.0", "2.0", "5.0", "+Inf")}
    return buckets(ENGINE_A, slow) + buckets(ENGINE_B, fast)


# alert -> (input series, labels of each alert expected at 10m with its humanized value).
# Everything not listed (instance b, a tmpfs, a short blip, a healthy model) must stay silent.
CASES = {
    "AssistantHighErrorRate": (
        [
            http(ENGINE_A, "200", "0+90x30"),
            http(ENGINE_A, "500", "0+10x30"),
            http(ENGINE_B, "200", "0+99x30"),
            http(ENGINE_B, "500", "0+1x30"),
        ],
        [({"host": "a", "instance": "a:8081"}, "10")],
    ),
    "AssistantSlowRequests": (
        # prometheus_client writes the 1 s boundary as le="1.0".
        buckets(ENGINE_A, {"1.0": "0+70x30"})
        + buckets(ENGINE_B, {"1.0": "0+95x30"})
        + [
            series("assistant_http_request_duration_seconds_count", {**ENGINE_A, "route": "/"}, "0+100x30"),
            series("assistant_http_request_duration_seconds_count", {**ENGINE_B, "route": "/"}, "0+100x30"),
        ],
        [({"host": "a", "instance": "a:8081"}, "30")],
    ),
    "AssistantHighP99Latency": (_p99_case(), [({"host": "a", "instance": "a:8081"}, "4.97")]),
    "AssistantModelFailures": (
        [
            calls("cloud", "success", "0+80x30"),
            calls("cloud", "error", "0+15x30"),
            calls("cloud", "timeout", "0+5x30"),
            calls("local", "success", "0+100x30"),
            calls("local", "rejected", "0+1x30"),
            calls("dead", "error", "0+5x30"),
        ],
        [({"model": "cloud"}, "20"), ({"model": "dead"}, "100")],
    ),
    "AssistantDiskFull": (
        filesystem(NODE_A, "/dev/sda1", "ext4", "/", "10x30", "100x30")
        + filesystem(NODE_A, "tmpfs", "tmpfs", "/run", "1x30", "100x30")
        + filesystem(NODE_B, "/dev/sda1", "ext4", "/", "50x30", "100x30"),
        [({**NODE_A, "device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"}, "90")],
    ),
    "AssistantMemoryHigh": (
        [
            series("node_memory_MemAvailable_bytes", NODE_A, "5x30"),
            series("node_memory_MemTotal_bytes", NODE_A, "100x30"),
            series("node_memory_MemAvailable_bytes", NODE_B, "20x30"),
            series("node_memory_MemTotal_bytes", NODE_B, "100x30"),
        ],
        [(NODE_A, "95")],
    ),
    "AssistantCpuHigh": (
        # idle seconds per minute of each CPU: a averages 15 (75% busy), b 30 (50% busy)
        [
            series("node_cpu_seconds_total", {**NODE_A, "cpu": "0", "mode": "idle"}, "0+6x30"),
            series("node_cpu_seconds_total", {**NODE_A, "cpu": "1", "mode": "idle"}, "0+24x30"),
            series("node_cpu_seconds_total", {**NODE_A, "cpu": "0", "mode": "user"}, "0+54x30"),
            series("node_cpu_seconds_total", {**NODE_B, "cpu": "0", "mode": "idle"}, "0+30x30"),
        ],
        [({"host": "a", "instance": "a:9100"}, "75")],
    ),
    "AssistantInstanceDown": (
        [
            series("up", ENGINE_A, "1 1 0x28"),
            series("up", ENGINE_B, "1x30"),
            series("up", {"job": "node", "host": "c", "instance": "c:9100"}, "1 0 1x28"),
        ],
        [(ENGINE_A, None)],
    ),
}


def expand(template: str, labels: dict[str, str], value: str | None) -> str:
    """The two template forms the rules use, expanded the way Prometheus does for these values."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    if value is not None:
        text = text.replace("{{ $value | humanize }}", value)
    assert "{{" not in text, f"unexpected template form in {template!r}"
    return text


def unit_tests(target) -> dict:
    rules = {a.name: a for a in alert_rules(target.spec)}
    tests = []
    for name, (inputs, firing) in CASES.items():
        rule = rules[name]
        expected = []
        for labels, value in firing:
            full = {**labels, "severity": rule.severity}
            expected.append(
                {
                    "exp_labels": full,
                    "exp_annotations": {
                        "summary": expand(rule.summary, full, value),
                        "description": expand(rule.description, full, value),
                    },
                }
            )
        tests.append(
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    # Over the threshold since 1m (2m for the down instance), still pending: `for` holds it.
                    {"eval_time": "2m", "alertname": name, "exp_alerts": []},
                    {"eval_time": "10m", "alertname": name, "exp_alerts": expected},
                ],
            }
        )
    return {"rule_files": ["rules/alerts.yml", "rules/recording.yml"], "evaluation_interval": "1m", "tests": tests}


@pytest.fixture
def target(make_target):
    return make_target(
        monitoring_overrides(prometheus={"enabled": True}, alertmanager={"enabled": True}, alerts=THRESHOLDS)
    )


def test_applies_only_on_monitoring_hosts_with_prometheus_enabled(make_target):
    assert not RENDERER.applies(make_target())
    assert not RENDERER.applies(make_target(monitoring_overrides()))
    on_engine_only = make_target({"monitoring": {"prometheus": {"enabled": True}}})
    assert not RENDERER.applies(on_engine_only)
    assert RENDERER.applies(make_target(monitoring_overrides(prometheus={"enabled": True})))


def test_config_scrapes_every_engine_and_node_and_passes_promtool(make_target, write_files, tmp_path):
    hosts = [
        {"name": "mon", "address": "10.0.0.3", "connection": "ssh", "roles": ["monitoring"]},
        {"name": "e1", "address": "10.0.0.1", "connection": "ssh", "roles": ["engine", "edge"]},
        {"name": "e2", "address": "fd00::2", "connection": "ssh", "roles": ["engine"]},
    ]
    target = make_target(
        {
            "monitoring": {
                "prometheus": {"enabled": True, "scrape_interval_seconds": 30},
                "metrics": {"path": "/internal/metrics"},
            },
            "security": {"edge_secret": "${env:EDGE_SECRET}"},
            "deploy": {
                "hosts": hosts,
                "ports": {"engine": 9181, "http": 8088},
                "state": {"history": "postgres", "postgres_dsn": "${env:PG_DSN}"},
            },
        },
        host="mon",
    )
    config = yaml.safe_load(render(target)["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {j: [(c["targets"][0], c["labels"]["host"]) for c in job["static_configs"]] for j, job in jobs.items()}
    # An edge's engine listens on loopback: it is scraped through its nginx (the HTTP port); an
    # engine-only host listens on its address, where Prometheus reaches it directly.
    assert targets["engine"] == [("10.0.0.1:8088", "e1"), ("[fd00::2]:9181", "e2")]
    assert targets["node"] == [("10.0.0.3:9100", "mon"), ("10.0.0.1:9100", "e1"), ("[fd00::2]:9100", "e2")]
    assert jobs["engine"]["metrics_path"] == "/internal/metrics"
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "30s"
    assert "alerting" not in config  # alertmanager is off
    folder = stage(target, write_files, tmp_path)
    result = run("promtool", "check", "config", folder / "prometheus.yml")
    assert_ok(result)
    assert "2 rule files found" in result.stdout


def test_alerting_points_at_local_alertmanager_and_rules_resolve_next_to_config(target, write_files, tmp_path):
    config = yaml.safe_load(render(target)["prometheus.yml"])
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    assert config["rule_files"] == ["rules/alerts.yml", "rules/recording.yml"]
    folder = stage(target, write_files, tmp_path / "release")
    # The renderer's own check, as apply runs it against a staged folder, from an unrelated cwd.
    command = RENDERER.check.format(dir=folder).split()
    assert_ok(run(command[0], *command[1:], cwd=tmp_path))


def test_rule_files_pass_promtool_check_rules(target, write_files, tmp_path):
    folder = stage(target, write_files, tmp_path)
    result = run("promtool", "check", "rules", folder / "rules/alerts.yml", folder / "rules/recording.yml")
    assert_ok(result)
    assert "8 rules found" in result.stdout


def test_every_alert_fires_over_its_threshold_and_stays_silent_under_it(target, write_files, tmp_path):
    assert set(CASES) == {a.name for a in alert_rules(target.spec)}, "every generated alert needs a case"
    folder = stage(target, write_files, tmp_path)
    (folder / "alerts_test.yml").write_text(yaml.safe_dump(unit_tests(target), sort_keys=False))
    assert_ok(run("promtool", "test", "rules", "alerts_test.yml", cwd=folder))


def test_recording_rules_give_the_dashboard_zero_for_a_model_that_only_fails(target, write_files, tmp_path):
    folder = stage(target, write_files, tmp_path)
    inputs = CASES["AssistantModelFailures"][0] + CASES["AssistantHighP99Latency"][0]
    ratio, quantile = (
        "model:assistant_model_calls:success_ratio_rate5m",
        "instance:assistant_http_request_duration_seconds:quantile_rate5m",
    )
    test = {
        "rule_files": ["rules/recording.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    # rounded to 0.1%: rate() arithmetic is not exact in the last bit
                    {
                        "expr": f"round({ratio} * 1000)",
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": '{model="cloud"}', "value": 800},
                            {"labels": '{model="dead"}', "value": 0},
                            {"labels": '{model="local"}', "value": 990},
                        ],
                    },
                    {
                        "expr": f'{quantile}{{quantile="0.5"}}',
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": f'{quantile}{{host="a",instance="a:8081",quantile="0.5"}}', "value": 3.5},
                            {"labels": f'{quantile}{{host="b",instance="b:8081",quantile="0.5"}}', "value": 0.175},
                        ],
                    },
                ],
            }
        ],
    }
    (folder / "recording_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    assert_ok(run("promtool", "test", "rules", "recording_test.yml", cwd=folder))


@pytest.mark.parametrize(("threshold", "bucket"), [(2, 2), (1.5, 1), (0.25, 0.25), (0.05, 0.1), (30, 5)])
def test_slow_threshold_uses_the_contract_bucket_at_or_below_it(threshold, bucket):
    assert slow_bucket(threshold) == bucket


def test_slow_request_alert_names_the_effective_bucket(make_target):
    target = make_target(monitoring_overrides(prometheus={"enabled": True}, alerts={"slow_request_seconds": 1.5}))
    slow = next(a for a in alert_rules(target.spec) if a.name == "AssistantSlowRequests")
    assert 'le=~"1|1.0"' in slow.expr and "longer than 1s" in slow.description


def test_rate_window_spans_four_scrapes(make_target):
    target = make_target(monitoring_overrides(prometheus={"enabled": True, "scrape_interval_seconds": 120}))
    assert all("[8m]" in r.expr for r in alert_rules(target.spec) if "rate(" in r.expr)
    assert {r.record for r in recording_rules(target.spec)} >= {"instance:assistant_http_requests:rate8m"}


def test_engine_job_is_dropped_when_metrics_are_disabled(make_target):
    target = make_target(monitoring_overrides(prometheus={"enabled": True}, metrics={"enabled": False}))
    config = yaml.safe_load(render(target)["prometheus.yml"])
    assert [job["job_name"] for job in config["scrape_configs"]] == ["node"]


def test_rules_read_only_contract_metrics(target):
    recorded = {r.record for r in recording_rules(target.spec)}
    exprs = [r.expr for r in alert_rules(target.spec)] + [r.expr for r in recording_rules(target.spec)]
    assert unknown_metrics(exprs, recorded) == {}
    assert "assistant_http_requests_total" in engine_sample_names()


def test_metric_name_extraction_sees_through_promql_syntax():
    expr = (
        'sum by (host, le) (rate(foo_bucket{le=~"1|1.0", job="x"}[5m])) / on(instance) group_left(model) '
        "bar:ratio_rate5m * 1e3 > bool 0.5 unless up == 0"
    )
    assert metric_names(expr) == {"foo_bucket", "bar:ratio_rate5m", "up"}
    assert unknown_metrics(["rate(assistant_http_requestz_total[5m])"], set()) != {}


def test_rendering_is_byte_identical_for_the_same_spec(target):
    first = render_target(target, only={"prometheus"})
    assert first == render_target(target, only={"prometheus"})
    assert set(first) == {"prometheus/prometheus.yml", "prometheus/rules/alerts.yml", "prometheus/rules/recording.yml"}


FLEET_HOSTS = [
    {"name": "mon", "address": "10.0.0.3", "connection": "ssh", "roles": ["monitoring"]},
    {"name": "e1", "address": "10.0.0.1", "connection": "ssh", "roles": ["engine", "edge"]},
    {"name": "e2", "address": "10.0.0.2", "connection": "ssh", "roles": ["engine"]},
]


def fleet_target(make_target, host: str, prometheus: bool = True, **security):
    return make_target(
        {
            "monitoring": {"prometheus": {"enabled": prometheus}},
            "security": {"edge_secret": "${env:EDGE_SECRET}", **security},
            "deploy": {
                "hosts": FLEET_HOSTS,
                "state": {"history": "postgres", "postgres_dsn": "${env:PG_DSN}"},
            },
        },
        host=host,
    )


@pytest.mark.parametrize("host", ["mon", "e1", "e2"])
def test_every_scraped_host_runs_node_exporter_on_its_own_address(make_target, host):
    from assistantctl.apply import debian_packages
    from assistantctl.renderers.supervisor import programs

    target = fleet_target(make_target, host)
    exporter = next(p for p in programs(target) if p.name == "node_exporter")
    address = next(h["address"] for h in FLEET_HOSTS if h["name"] == host)
    assert exporter.command[0] == "prometheus-node-exporter"
    assert f"--web.listen-address={address}:9100" in exporter.command
    assert "prometheus-node-exporter" in debian_packages(target)
    # Without a Prometheus anywhere, nothing is scraped and nothing is installed.
    bare = fleet_target(make_target, host, prometheus=False)
    assert "node_exporter" not in [p.name for p in programs(bare)]
    assert "prometheus-node-exporter" not in debian_packages(bare)


def test_edge_serves_its_own_engines_metrics_to_the_monitoring_hosts_only(make_target):
    from assistantctl.renderers.nginx import render as render_nginx

    target = fleet_target(make_target, "e1", tls={"enabled": True, "certificate": "c.pem", "key": "k.pem"})
    site = render_nginx(target)["site.conf"]
    plain, _, tls = site.partition("listen 8443")
    for server in (plain, tls):
        metrics = server.split('location = "/metrics" {', 1)[1].split("}", 1)[0]
        # its own engine, not the balanced upstream (which would mix in engine-only hosts)
        assert "proxy_pass http://127.0.0.1:8081;" in metrics
        # the monitoring host is admitted even though metrics.allow_networks does not name it
        assert metrics.index('allow "10.0.0.3/32";') < metrics.index("deny all;")
