"""Prometheus on monitoring hosts: `prometheus.yml`, `rules/alerts.yml` and `rules/recording.yml`.

Everything is built as Python data and written by one YAML dumper (`dump_yaml`), so quoting of
PromQL, Go templates and paths happens in one place. Rule files are named relative to
`prometheus.yml`; Prometheus resolves them against the config file's folder, so a staged release
validates against its own rules. Metric names are the engine's contract (docs/architecture.md)
plus node_exporter's `node_*` and `up`.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address, ip_network

import yaml

from ..schema.spec import Host, Spec
from .base import Files, Renderer, Target

NODE_EXPORTER_PORT = 9100
ALERTS_FILE = "rules/alerts.yml"
RECORDING_FILE = "rules/recording.yml"
# Buckets of assistant_http_request_duration_seconds the architecture promises.
CONTRACT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
INSTANCE_DOWN = "AssistantInstanceDown"
# Filesystems that are not the host's disks: their usage says nothing about running out of space.
_PSEUDO_FS = "tmpfs|devtmpfs|ramfs|squashfs|overlay|nsfs|fuse.lxcfs"
_HEADER = "# Rendered by assistantctl from assistant.yaml; edit the spec, not this file.\n"


def dump_yaml(data: object) -> str:
    """The one YAML writer of the monitoring renderers: safe types only, sorted keys, no folding."""
    text = yaml.dump(
        data,
        Dumper=yaml.SafeDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=100_000,
    )
    return _HEADER + text


def num(value: float) -> str:
    """A PromQL / label-friendly number: `5` rather than `5.0`, `0.25` as is."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def rate_window(spec: Spec) -> str:
    """The range of every rate(): 5m, widened so it always spans at least four scrapes."""
    seconds = max(300, 4 * spec.monitoring.prometheus.scrape_interval_seconds)
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def slow_bucket(threshold_seconds: float) -> float:
    """The bucket boundary that stands for the slow-request threshold.

    The largest contract bucket at or below the threshold (the alert then errs toward firing
    early); a threshold under the smallest bucket uses the smallest one.
    """
    below = [b for b in CONTRACT_BUCKETS if b <= threshold_seconds]
    return below[-1] if below else CONTRACT_BUCKETS[0]


def le_matcher(boundary: float) -> str:
    """`le` as Prometheus stores it: prometheus_client writes `2.0`, other clients `2`."""
    text = num(boundary)
    return f'le=~"{text}|{text}.0"' if float(boundary).is_integer() else f'le="{text}"'


def host_port(address: str, port: int) -> str:
    """`address:port`, with an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _address(host: Host, port: int) -> str:
    return host_port(host.address, port)


def scrapers(spec: Spec) -> list[str]:
    """The monitoring hosts whose Prometheus reads every engine's metrics, as networks (`/32`,
    `/128`), unless `monitoring.metrics.allow_networks` already covers them. A host named by DNS
    is left out: nginx and the engine admit addresses, so list its network there."""
    if not spec.monitoring.prometheus.enabled:
        return []
    found: list[str] = []
    for host in spec.deploy.hosts:
        try:
            address = ip_address(host.address)
        except ValueError:
            continue
        covered = any(address in network for network in spec.monitoring.metrics.allow_networks)
        network = str(ip_network(address))
        if "monitoring" in host.roles and not covered and network not in found:
            found.append(network)
    return found


def metrics_readers(spec: Spec) -> list[str]:
    """Networks that read the engine's metrics without credentials: the spec's, then `scrapers`."""
    return [str(n) for n in spec.monitoring.metrics.allow_networks] + scrapers(spec)


def engine_scrape_address(target: Target, engine: Host) -> str:
    """Where this Prometheus reaches `engine`'s metrics: its own host's engine over loopback; an
    edge's engine (which listens on loopback only) through that edge's nginx, on the plain HTTP
    port; an engine-only host where it listens, which admits the monitoring hosts to the metrics
    path (and nothing else) without the edges' shared secret."""
    ports = target.spec.deploy.ports
    if engine.name == target.host.name:
        return host_port("127.0.0.1", ports.engine)
    return _address(engine, ports.http if "edge" in engine.roles else ports.engine)


# --- prometheus.yml ---------------------------------------------------------------------------


def _static_job(name: str, targets: list[tuple[Host, str]], **extra: object) -> dict:
    return {
        "job_name": name,
        **extra,
        "static_configs": [{"targets": [address], "labels": {"host": h.name}} for h, address in targets],
    }


def build_config(target: Target) -> dict:
    spec = target.spec
    monitoring = spec.monitoring
    interval = f"{monitoring.prometheus.scrape_interval_seconds}s"
    jobs = []
    engines = [h for h in spec.deploy.hosts if "engine" in h.roles]
    if monitoring.metrics.enabled and engines:
        found = [(h, engine_scrape_address(target, h)) for h in engines]
        jobs.append(_static_job("engine", found, metrics_path=monitoring.metrics.path))
    jobs.append(_static_job("node", [(h, _address(h, NODE_EXPORTER_PORT)) for h in spec.deploy.hosts]))
    config: dict = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"assistant": spec.name},
        },
        "rule_files": [ALERTS_FILE, RECORDING_FILE],
        "scrape_configs": jobs,
    }
    if monitoring.alertmanager.enabled:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{monitoring.alertmanager.port}"]}]}]
        }
    return config


# --- rules/recording.yml ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str
    labels: dict[str, str] | None = None

    def as_rule(self) -> dict:
        return {"record": self.record, "expr": self.expr, **({"labels": self.labels} if self.labels else {})}


REQUEST_RATE = "instance:assistant_http_requests:rate"
ERROR_RATIO = "instance:assistant_http_errors:ratio_rate"
LATENCY_BUCKETS = "instance_le:assistant_http_request_duration_seconds_bucket:rate"
LATENCY_QUANTILE = "instance:assistant_http_request_duration_seconds:quantile_rate"
MODEL_SUCCESS_RATIO = "model:assistant_model_calls:success_ratio_rate"
MODEL_CALL_RATE = "model_outcome:assistant_model_calls:rate"
TOKEN_RATE = "model_direction:assistant_model_tokens:rate"
RATE_LIMITED_RATE = "route:assistant_rate_limited:rate"
QUANTILES = (0.5, 0.95, 0.99)


def _ratio_or_zero(part: str, whole: str, by: str, w: str) -> str:
    """part / whole per group, 0 (not absent) for a group that has traffic but no `part` series:
    a model whose every call fails must show 0% success, not vanish from the dashboard."""
    total = f"sum by ({by}) (rate({whole}[{w}]))"
    return f"(sum by ({by}) (rate({part}[{w}])) or {total} * 0) / {total}"


def recording_rules(spec: Spec) -> list[Recording]:
    """Rules the dashboard reads; names follow `level:metric:operation`, suffixed with the window."""
    w = rate_window(spec)
    by = "host, instance"
    rules = [
        Recording(REQUEST_RATE + w, f"sum by ({by}) (rate(assistant_http_requests_total[{w}]))"),
        Recording(
            ERROR_RATIO + w,
            _ratio_or_zero('assistant_http_requests_total{status=~"5.."}', "assistant_http_requests_total", by, w),
        ),
        Recording(
            LATENCY_BUCKETS + w, f"sum by ({by}, le) (rate(assistant_http_request_duration_seconds_bucket[{w}]))"
        ),
    ]
    rules += [
        Recording(LATENCY_QUANTILE + w, f"histogram_quantile({num(q)}, {LATENCY_BUCKETS + w})", {"quantile": num(q)})
        for q in QUANTILES
    ]
    rules += [
        Recording(MODEL_CALL_RATE + w, f"sum by (model, outcome) (rate(assistant_model_calls_total[{w}]))"),
        Recording(
            MODEL_SUCCESS_RATIO + w,
            _ratio_or_zero('assistant_model_calls_total{outcome="success"}', "assistant_model_calls_total", "model", w),
        ),
        Recording(TOKEN_RATE + w, f"sum by (model, direction) (rate(assistant_model_tokens_total[{w}]))"),
        Recording(RATE_LIMITED_RATE + w, f"sum by (route) (rate(assistant_rate_limited_total[{w}]))"),
    ]
    return rules


# --- rules/alerts.yml -------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    minutes: int
    severity: str
    summary: str
    description: str

    def as_rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": f"{self.minutes}m" if self.minutes else "0s",
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _ratio_percent(numerator: str, denominator: str, by: str) -> str:
    return f"(sum by ({by}) ({numerator}) / sum by ({by}) ({denominator})) * 100"


def alert_rules(spec: Spec) -> list[Alert]:
    """One alert per threshold in `monitoring.alerts`. Values in descriptions pass through
    `humanize`, and ratios are in percent, so the text reads like the spec."""
    a = spec.monitoring.alerts
    w = rate_window(spec)
    by = "host, instance"
    requests = f"rate(assistant_http_requests_total[{w}])"
    bucket = slow_bucket(a.slow_request_seconds)
    fast = f"rate(assistant_http_request_duration_seconds_bucket{{{le_matcher(bucket)}}}[{w}])"
    calls = f"rate(assistant_model_calls_total[{w}])"
    disk = f'fstype!~"{_PSEUDO_FS}"'
    value = "{{ $value | humanize }}"
    on = "{{ $labels.host }} ({{ $labels.instance }})"
    return [
        Alert(
            "AssistantHighErrorRate",
            _ratio_percent(f'rate(assistant_http_requests_total{{status=~"5.."}}[{w}])', requests, by)
            + f" > {num(a.error_rate_percent)}",
            a.for_minutes,
            "critical",
            f"More than {num(a.error_rate_percent)}% of requests fail on {on}",
            f"{value}% of HTTP requests answered 5xx over the last {w}.",
        ),
        Alert(
            "AssistantSlowRequests",
            f"(1 - sum by ({by}) ({fast}) / sum by ({by}) "
            f"(rate(assistant_http_request_duration_seconds_count[{w}]))) * 100 > {num(a.slow_request_percent)}",
            a.for_minutes,
            "warning",
            f"More than {num(a.slow_request_percent)}% of requests are slow on {on}",
            f"{value}% of HTTP requests took longer than {num(bucket)}s over the last {w}.",
        ),
        Alert(
            "AssistantHighP99Latency",
            f"histogram_quantile(0.99, sum by ({by}, le) (rate(assistant_http_request_duration_seconds_bucket[{w}])))"
            f" > {num(a.p99_latency_seconds)}",
            a.for_minutes,
            "warning",
            f"p99 latency above {num(a.p99_latency_seconds)}s on {on}",
            f"The 99th percentile of HTTP request latency is {value}s over the last {w}.",
        ),
        Alert(
            "AssistantModelFailures",
            # error, timeout and rejected (breaker open, over capacity) all leave a user unanswered.
            _ratio_percent(f'rate(assistant_model_calls_total{{outcome!="success"}}[{w}])', calls, "model")
            + f" > {num(a.model_failure_percent)}",
            a.for_minutes,
            "warning",
            f"Model {{{{ $labels.model }}}} fails more than {num(a.model_failure_percent)}% of calls",
            f"{value}% of calls to model {{{{ $labels.model }}}} did not succeed over the last {w}.",
        ),
        Alert(
            "AssistantDiskFull",
            f"(1 - node_filesystem_avail_bytes{{{disk}}} / node_filesystem_size_bytes{{{disk}}}) * 100"
            f" > {num(a.disk_used_percent)}",
            a.for_minutes,
            "warning",
            f"Disk {{{{ $labels.mountpoint }}}} above {num(a.disk_used_percent)}% on {on}",
            f"{{{{ $labels.mountpoint }}}} is {value}% full.",
        ),
        Alert(
            "AssistantMemoryHigh",
            f"(1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) * 100 > {num(a.memory_used_percent)}",
            a.for_minutes,
            "warning",
            f"Memory above {num(a.memory_used_percent)}% on {on}",
            f"{value}% of memory is in use.",
        ),
        Alert(
            "AssistantCpuHigh",
            # busy = not idle, averaged over the host's CPUs (iowait counts as busy: the host is stuck)
            f'(1 - avg by ({by}) (rate(node_cpu_seconds_total{{mode="idle"}}[{w}]))) * 100 > {num(a.cpu_used_percent)}',
            a.for_minutes,
            "warning",
            f"CPU above {num(a.cpu_used_percent)}% on {on}",
            f"The CPUs were busy {value}% of the time over the last {w}.",
        ),
        Alert(
            INSTANCE_DOWN,
            "up == 0",
            a.instance_down_minutes,
            "critical",
            f"{{{{ $labels.job }}}} on {on} is down",
            f"Prometheus could not scrape {{{{ $labels.instance }}}} for {a.instance_down_minutes} minute(s).",
        ),
    ]


def render(target: Target) -> Files:
    spec = target.spec
    return {
        "prometheus.yml": dump_yaml(build_config(target)),
        ALERTS_FILE: dump_yaml(
            {"groups": [{"name": "assistant-alerts", "rules": [r.as_rule() for r in alert_rules(spec)]}]}
        ),
        RECORDING_FILE: dump_yaml(
            {"groups": [{"name": "assistant-recording", "rules": [r.as_rule() for r in recording_rules(spec)]}]}
        ),
    }


RENDERER = Renderer(
    name="prometheus",
    service="prometheus",
    render=render,
    applies=lambda t: t.has_role("monitoring") and t.spec.monitoring.prometheus.enabled,
    # Loads the staged config and the rule files it names, relative to its folder.
    check="promtool check config {dir}/prometheus.yml",
)
