"""Log shipping to Elasticsearch: `filebeat.yml` on every host, `logstash/pipeline.conf` (and the
Kibana index patterns) where Logstash runs.

Logstash runs on the first host with the `logging` role, or on every host (loopback) when no host
has it. Filebeat tails the engine and nginx access logs, tags each event `fields.type` (engine |
nginx) and ships to that Logstash on port 5044. The grok patterns below are the parsing side of two
contracts: the engine log line of docs/architecture.md and `renderers.nginx.ACCESS_LOG_FORMAT`.
The pipeline is written for Logstash's default `config.support_escapes: false`.
"""

from __future__ import annotations

import json

from ..schema.spec import Host, Spec
from .base import Files, Renderer, Target
from .prometheus import dump_yaml
from .templating import render_template

BEATS_PORT = 5044
PIPELINE_FILE = "logstash/pipeline.conf"
INDEX_PATTERNS_FILE = "kibana/index-patterns.ndjson"
LOG_TYPES = ("engine", "nginx")

# `<time> <LEVEL> <logger> key=value ... msg="..."`: the pairs go to `kv` (split by the kv filter),
# the quoted message (backslash-escaped quotes inside) to `msg`.
ENGINE_GROK = (
    r"^%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:level} %{NOTSPACE:logger}"
    r"(?<kv>(?: (?!msg=)[A-Za-z_][A-Za-z0-9_.]*=\S*)*)"
    r'(?: msg="(?<msg>(?:[^"\\]|\\.)*)")?$'
)
# nginx `combined` plus request_time, upstream_response_time (quoted: "-" or a list on retries) and
# request_id. nginx writes `"` inside a variable as \x22, so quoted fields never hold a bare quote.
NGINX_GROK = (
    r"^%{NOTSPACE:client_ip} - %{NOTSPACE:remote_user} \[%{HTTPDATE:timestamp}\] "
    r'"(?:%{WORD:method} %{NOTSPACE:path}(?: HTTP/%{NUMBER:http_version})?|%{DATA:request})" '
    r'%{INT:status} %{INT:bytes} "%{DATA:referrer}" "%{DATA:user_agent}" '
    r'request_time=%{NUMBER:request_time} upstream_response_time="%{DATA:upstream_response_time}" '
    r"request_id=%{NOTSPACE:request_id}$"
)
NGINX_TIME_FORMAT = "dd/MMM/yyyy:HH:mm:ss Z"
# Fields turned into numbers; "-" (unknown) is dropped first, not converted to 0.
NUMERIC_FIELDS = {"latency_ms": "float", "request_time": "float", "status": "integer", "bytes": "integer"}


def logstash_host(spec: Spec) -> Host | None:
    """The central Logstash host, or None when every host runs its own."""
    return next((h for h in spec.deploy.hosts if "logging" in h.roles), None)


def runs_logstash(target: Target) -> bool:
    central = logstash_host(target.spec)
    return central is None or central.name == target.host.name


def logstash_address(target: Target) -> str:
    central = logstash_host(target.spec)
    if central is None or central.name == target.host.name:
        return f"127.0.0.1:{BEATS_PORT}"
    address = f"[{central.address}]" if ":" in central.address else central.address
    return f"{address}:{BEATS_PORT}"


def filebeat_config(target: Target) -> dict:
    logs = target.path("logs")
    return {
        "name": target.host.name,
        "path.data": target.path("data", "filebeat"),
        "filebeat.inputs": [
            {
                "type": "filestream",
                "id": f"assistant-{log_type}",
                "paths": [f"{logs}/{file}"],
                "fields": {"type": log_type, "assistant": target.spec.name},
            }
            for log_type, file in (("engine", "engine.log"), ("nginx", "nginx-access.log"))
        ],
        "output.logstash": {"hosts": [logstash_address(target)]},
        "logging.to_files": True,
        "logging.files": {"path": logs, "name": "filebeat.log", "keepfiles": 5},
    }


def pipeline(target: Target) -> str:
    spec = target.spec
    central = logstash_host(spec)
    return render_template(
        "elk/pipeline.conf.j2",
        host=target.host.name,
        # A central Logstash takes beats from the other hosts; a per-host one only from its own.
        listen="0.0.0.0" if central is not None else "127.0.0.1",
        port=BEATS_PORT,
        engine_format=spec.monitoring.logging.format,
        engine_grok=ENGINE_GROK,
        nginx_grok=NGINX_GROK,
        nginx_time_format=NGINX_TIME_FORMAT,
        numeric=NUMERIC_FIELDS,
        elasticsearch=[str(url).rstrip("/") for url in spec.monitoring.logging.elk.elasticsearch_hosts],
        # Daily `<prefix>-<type>-YYYY.MM.dd`: one ILM delete policy on `<prefix>-*` ages them out.
        index=f"{spec.monitoring.logging.elk.index_prefix}-%{{[fields][type]}}-%{{+YYYY.MM.dd}}",
    )


def index_patterns(spec: Spec) -> str:
    """Kibana saved objects (import with the saved objects API): one index pattern per log type."""
    prefix = spec.monitoring.logging.elk.index_prefix
    lines = [
        json.dumps(
            {
                "type": "index-pattern",
                "id": f"{prefix}-{log_type}",
                "attributes": {"title": f"{prefix}-{log_type}-*", "timeFieldName": "@timestamp"},
            },
            sort_keys=True,
        )
        for log_type in LOG_TYPES
    ]
    return "\n".join(lines) + "\n"


def render(target: Target) -> Files:
    files = {"filebeat.yml": dump_yaml(filebeat_config(target))}
    if runs_logstash(target):
        files[PIPELINE_FILE] = pipeline(target)
        files[INDEX_PATTERNS_FILE] = index_patterns(target.spec)
    return files


# No check: Filebeat and Logstash are not installable on this machine kind (see docs/architecture.md);
# the tests parse the pipeline with a Logstash config parser and run the grok patterns with pygrok.
RENDERER = Renderer(
    name="elk",
    service="filebeat",
    render=render,
    applies=lambda t: t.spec.monitoring.logging.elk.enabled,
)
