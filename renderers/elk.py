"""Log shipping to Elasticsearch: `filebeat.yml` on every host, `logstash/pipeline.conf` (and the
Kibana index patterns) where Logstash runs.

Logstash runs on the first host with the `logging` role, or on every host (loopback) when no host
has it. Filebeat tails the engine and nginx access logs, tags each event `fields.type` (engine |
nginx) and ships to that Logstash on port 5044. A central Logstash listens on its host's own address
(never 0.0.0.0), and with `elk.tls` the beats connection to it is TLS: Logstash presents the certificate,
Filebeat verifies it against the CA (or the certificate itself) and the host name it dials. The key
and certificates are secret files (0600) in `elk/secrets/`, never in a config.

The grok patterns below are the parsing side of two contracts: the engine log line of
docs/architecture.md and `renderers.nginx.ACCESS_LOG_FORMAT`. The pipeline is written for
Logstash's default `config.support_escapes: false`.
"""

from __future__ import annotations

import json

from ..schema.spec import Host, Spec
from .base import Files, Renderer, Target
from .prometheus import dump_yaml
from .templating import render_template

BEATS_PORT = 5044
SECRETS_DIR = "secrets"
CERTIFICATE_SECRET = "monitoring.logging.elk.tls.certificate"
KEY_SECRET = "monitoring.logging.elk.tls.key"
CA_SECRET = "monitoring.logging.elk.tls.certificate_authority"
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


def listen_address(target: Target) -> str:
    """Where this host's Logstash listens: a central one on its own address, others on loopback."""
    central = logstash_host(target.spec)
    if central is None:
        return "127.0.0.1"
    # The central host itself ships to its own address too: the certificate names that address.
    return central.address


def logstash_address(target: Target) -> str:
    """host:port Filebeat on this host dials."""
    central = logstash_host(target.spec)
    if central is None:
        return f"127.0.0.1:{BEATS_PORT}"
    address = f"[{central.address}]" if ":" in central.address else central.address
    return f"{address}:{BEATS_PORT}"


def tls_on(target: Target) -> bool:
    """TLS where logs cross the network to a central Logstash (schema/checks.py requires it there);
    a Logstash that only its own host ships to (per host, or a one-host deployment) needs none."""
    spec = target.spec
    central = logstash_host(spec) is not None and len(spec.deploy.hosts) > 1
    return central and spec.monitoring.logging.elk.tls is not None


def _secret(target: Target, name: str) -> str:
    return f"{target.current}/elk/{SECRETS_DIR}/{name}"


def trusted_ca_secret(target: Target) -> str:
    """The secret Filebeat verifies Logstash with: the CA when given, else the certificate."""
    tls = target.spec.monitoring.logging.elk.tls
    return CA_SECRET if tls is not None and tls.certificate_authority is not None else CERTIFICATE_SECRET


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
        "output.logstash": _output(target),
        "logging.to_files": True,
        "logging.files": {"path": logs, "name": "filebeat.log", "keepfiles": 5},
    }


def _output(target: Target) -> dict:
    output: dict = {"hosts": [logstash_address(target)]}
    if tls_on(target):
        # verification_mode full (Filebeat's default, spelled out): chain and host name are checked.
        output["ssl"] = {
            "enabled": True,
            "certificate_authorities": [_secret(target, trusted_ca_secret(target))],
            "verification_mode": "full",
        }
    return output


def pipeline(target: Target) -> str:
    spec = target.spec
    tls = tls_on(target)
    return render_template(
        "elk/pipeline.conf.j2",
        host=target.host.name,
        listen=listen_address(target),
        port=BEATS_PORT,
        certificate=_secret(target, CERTIFICATE_SECRET) if tls else None,
        key=_secret(target, KEY_SECRET) if tls else None,
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


def secret_files(target: Target, values: dict[str, str]) -> Files:
    """The TLS material this host needs: Logstash's certificate and key where it runs, the
    certificate Filebeat trusts everywhere."""
    if not tls_on(target):
        return {}
    names = {trusted_ca_secret(target)}
    if runs_logstash(target):
        names |= {CERTIFICATE_SECRET, KEY_SECRET}
    return {f"{SECRETS_DIR}/{name}": values[name] for name in sorted(names) if name in values}


# Each program's own checker, on the staged folder before the switch. Filebeat reads the config and
# the files it names (`test config`); Logstash compiles the pipeline (`--config.test_and_exit`, with
# a throwaway data path so a running Logstash's lock is not in the way). Neither is installable on
# this machine kind: tests parse the pipeline with a Logstash config parser and run the groks with pygrok.
FILEBEAT_CHECK = "filebeat test config -c {dir}/filebeat.yml"
LOGSTASH_CHECK = (
    "/usr/share/logstash/bin/logstash --path.settings /etc/logstash --path.data {root}/tmp/logstash-check "
    "--config.test_and_exit -f {dir}/" + PIPELINE_FILE
)


def extra_checks(target: Target) -> tuple[str, ...]:
    return (LOGSTASH_CHECK,) if runs_logstash(target) else ()


RENDERER = Renderer(
    name="elk",
    service="filebeat",
    render=render,
    applies=lambda t: t.spec.monitoring.logging.elk.enabled,
    check=FILEBEAT_CHECK,
    secret_files=secret_files,
    extra_checks=extra_checks,
)
