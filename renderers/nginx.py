"""The edge proxy: `nginx.conf` (process, logs, temp paths) and `site.conf` (the assistant's routes).

nginx runs as `nginx -p <root>/current/nginx/ -c nginx.conf -e <root>/logs/nginx-error.log`, so the
site file is included relative to that prefix and resolves inside whichever release is tested.
Every value taken from the spec reaches the templates through the `nginx_str` filter (strings) or
as an int; the templates hold no spec text of their own.
"""

from __future__ import annotations

import math
from posixpath import isabs, join

from ..schema.spec import Host, Spec
from .base import Files, Renderer, Target
from .prometheus import metrics_readers
from .templating import render_template

# The access log format, a contract with the Logstash grok: nginx's `combined` plus three fields.
# upstream_response_time is quoted because it holds "-" or a list ("0.010, 0.004") on retries.
ACCESS_LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" '
    'request_time=$request_time upstream_response_time="$upstream_response_time" '
    "request_id=$request_id"
)
# Engine answers its own request timeout a little before nginx gives up on it, so the client
# gets the engine's error (with its request id) rather than a bare 504.
TIMEOUT_MARGIN_SECONDS = 5
STREAM_READ_TIMEOUT_MIN_SECONDS = 300
WEBSOCKET_HEARTBEATS_BEFORE_TIMEOUT = 3
STREAMING_PATHS = ("/api/v1/chat/stream", "/v1/chat/completions")
# Folders of the user's snippets (overrides/nginx/<folder>/*.conf, copied into the release by the
# bundle step) and the file whose block includes them: `http {}` and the assistant's main `server {}`.
SNIPPET_FOLDERS = {"http.d": "nginx.conf", "server.d": "site.conf"}
WEBHOOK_CHANNELS = ("telegram", "wecom", "whatsapp")


def seconds(value: float) -> int:
    """An nginx time in whole seconds (nginx takes no fractions), never below 1."""
    return max(1, math.ceil(value))


def upstream_servers(spec: Spec, host: Host) -> list[str]:
    """Engine nodes this edge proxies to: its own engine first, over loopback.

    A remote engine that also has the edge role binds loopback only (see renderers/engine.py), so
    only engine-only hosts are reachable from another edge.
    """
    port = spec.deploy.ports.engine
    servers = [f"127.0.0.1:{port}"] if "engine" in host.roles else []
    for other in spec.deploy.hosts:
        if other.name != host.name and "engine" in other.roles and "edge" not in other.roles:
            address = f"[{other.address}]" if ":" in other.address else other.address
            servers.append(f"{address}:{port}")
    if not servers:
        raise ValueError(
            f"edge host '{host.name}' has no reachable engine: give it the engine role "
            "or add a host with the engine role only"
        )
    return servers


def metrics_location(spec: Spec, host: Host | None) -> dict[str, object]:
    """The metrics route: the monitoring networks and hosts only. On an edge that runs an engine it
    is that engine's own metrics (`local_port`), never the balanced upstream, so Prometheus
    scraping this edge reads one engine's counters every time."""
    local = host is not None and "engine" in host.roles
    return {
        "path": spec.monitoring.metrics.path,
        "kind": "metrics",
        "allow": metrics_readers(spec),
        "local_port": spec.deploy.ports.engine if local else None,
    }


def exact_locations(spec: Spec, host: Host | None = None) -> list[dict[str, object]]:
    """Exact-match routes, most restrictive first; a path claimed twice keeps its first owner."""
    channels, monitoring = spec.channels, spec.monitoring
    wanted: list[dict[str, object]] = []
    if monitoring.metrics.enabled:
        wanted.append(metrics_location(spec, host))
    wanted.append({"path": "/health", "kind": "health"})
    if channels.websocket.enabled:
        wanted.append({"path": channels.websocket.path, "kind": "websocket"})
    for name in WEBHOOK_CHANNELS:
        channel = getattr(channels, name)
        if channel.enabled:
            wanted.append({"path": channel.path, "kind": "webhook", "channel": name})
    wanted += [{"path": path, "kind": "stream"} for path in STREAMING_PATHS]
    taken: set[str] = set()
    result = []
    for location in wanted:
        if location["path"] not in taken:
            taken.add(str(location["path"]))
            result.append(location)
    return result


def _file(target: Target, path: str) -> str:
    # A relative certificate path is taken relative to the deploy root, never the release folder.
    return path if isabs(path) else join(target.root, path)


def site_context(target: Target) -> dict[str, object]:
    spec = target.spec
    limits, tls, ports = spec.limits, spec.security.tls, spec.deploy.ports
    request_timeout = seconds(limits.timeouts.request_seconds) + TIMEOUT_MARGIN_SECONDS
    return {
        "server_name": spec.deploy.server_name,
        "upstreams": upstream_servers(spec, target.host),
        "http_port": ports.http,
        "https_port": ports.https,
        "tls": tls.enabled,
        "hsts": tls.enabled and tls.hsts,
        "certificate": _file(target, tls.certificate) if tls.enabled else None,
        "certificate_key": _file(target, tls.key) if tls.enabled else None,
        "redirect_port": "" if ports.https == 443 else f":{ports.https}",
        "allowed_networks": [str(n) for n in spec.security.allowed_networks],
        "requests_per_minute": limits.rate_limit.requests_per_minute,
        "burst": limits.rate_limit.burst,
        "max_body_kilobytes": limits.max_body_kilobytes,
        "connect_timeout": seconds(limits.timeouts.connect_seconds),
        "send_timeout": seconds(limits.timeouts.read_seconds),
        "read_timeout": request_timeout,
        "stream_timeout": max(request_timeout, STREAM_READ_TIMEOUT_MIN_SECONDS),
        "websocket_timeout": seconds(spec.channels.websocket.heartbeat_seconds * WEBSOCKET_HEARTBEATS_BEFORE_TIMEOUT),
        "web": spec.channels.web.enabled,
        "edge_secret": _sends_edge_secret(target),
        "exact": exact_locations(spec, target.host),
    }


EDGE_AUTH_FILE = "edge-auth.conf"
EDGE_SECRET = "security.edge_secret"


def _sends_edge_secret(target: Target) -> bool:
    """Whether this edge proxies to engine-only hosts, which require the shared secret."""
    port = target.spec.deploy.ports.engine
    remote = [s for s in upstream_servers(target.spec, target.host) if s != f"127.0.0.1:{port}"]
    return bool(remote) and target.spec.security.edge_secret is not None


def secret_files(target: Target, values: dict[str, str]) -> Files:
    """`edge-auth.conf`: the header with the shared secret, for edges in front of engine-only hosts."""
    if not _sends_edge_secret(target) or EDGE_SECRET not in values:
        return {}
    return {EDGE_AUTH_FILE: render_template("nginx/edge-auth.conf.j2", secret=values[EDGE_SECRET])}


def render(target: Target, snippets: frozenset[str] = frozenset()) -> Files:
    """nginx.conf and site.conf; each folder in `snippets` (of SNIPPET_FOLDERS) gets its include."""
    main = render_template(
        "nginx/nginx.conf.j2",
        host=target.host.name,
        pid=target.path("run", "nginx.pid"),
        error_log=target.path("logs", "nginx-error.log"),
        access_log=target.path("logs", "nginx-access.log"),
        temp=target.path("tmp", "nginx"),
        log_format=ACCESS_LOG_FORMAT,
        max_body_kilobytes=target.spec.limits.max_body_kilobytes,
        snippets=snippets,
    )
    site = render_template("nginx/site.conf.j2", **site_context(target), snippets=snippets)
    return {"nginx.conf": main, "site.conf": site}


RENDERER = Renderer(
    name="nginx",
    service="nginx",
    render=render,
    applies=lambda t: t.has_role("edge"),
    check="nginx -t -q -p {dir}/ -c nginx.conf -e {root}/logs/nginx-error.log",
    secret_files=secret_files,
)
