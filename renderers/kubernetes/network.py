"""How the engine is reached and what it reaches: the Ingress (WebSocket and SSE settings), the
NetworkPolicy, and PostgreSQL / Redis outside the cluster as Services."""

from __future__ import annotations

import ipaddress
import math
from urllib.parse import urlsplit

from ...schema.spec import ExternalService, Spec
from ..nginx import STREAM_READ_TIMEOUT_MIN_SECONDS, TIMEOUT_MARGIN_SECONDS, WEBSOCKET_HEARTBEATS_BEFORE_TIMEOUT
from .names import base_name, engine_name, labels, meta, namespace


def ingress_host(spec: Spec) -> str | None:
    """A lowercase DNS name, or None (every host) for what an Ingress cannot name: an IP address or
    a trailing wildcard (the API server refuses both, and capitals; its JSON schemas do not)."""
    host = (spec.kubernetes.ingress.host or spec.deploy.server_name).lower()
    return None if host.endswith(".*") or _is_ip(host) else host


def tls_secret(spec: Spec) -> str | None:
    """The Ingress's certificate: the one named, else `<namespace>-tls` when the spec asks for TLS."""
    chosen = spec.kubernetes.ingress.tls_secret
    return chosen or (f"{namespace(spec)}-tls" if spec.security.tls.enabled else None)


def ingress_timeout_seconds(spec: Spec) -> int:
    """One read/send timeout for every path: the longest stream, or three missed WebSocket pings."""
    request = math.ceil(spec.limits.timeouts.request_seconds) + TIMEOUT_MARGIN_SECONDS
    websocket = math.ceil(spec.channels.websocket.heartbeat_seconds * WEBSOCKET_HEARTBEATS_BEFORE_TIMEOUT)
    return max(request, STREAM_READ_TIMEOUT_MIN_SECONDS, websocket)


def ingress(spec: Spec) -> dict:
    chosen = spec.kubernetes.ingress
    certificate = tls_secret(spec)
    timeout = str(ingress_timeout_seconds(spec))
    # ingress-nginx annotations (other controllers ignore them): WebSocket upgrades pass by default
    # and live as long as the read timeout; SSE needs the response unbuffered.
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-body-size": f"{spec.limits.max_body_kilobytes}k",
        "nginx.ingress.kubernetes.io/ssl-redirect": "true" if certificate else "false",
    }
    backend = {"service": {"name": engine_name(spec), "port": {"name": "http"}}}
    rule: dict = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
    host = ingress_host(spec)
    if host:
        rule["host"] = host
    body: dict = {"rules": [rule]}
    if chosen.class_name:
        body["ingressClassName"] = chosen.class_name
    if certificate:
        body["tls"] = [{"secretName": certificate, **({"hosts": [host]} if host else {})}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta(spec, engine_name(spec), annotations=annotations),
        "spec": body,
    }


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def external_service(spec: Spec, kind: str, external: ExternalService) -> list[dict]:
    """`<name>-<kind>`: an ExternalName Service for a DNS name; for an IP, a Service without a
    selector and the EndpointSlice that points it at the address."""
    name = f"{base_name(spec)}-{kind}"
    port = {"name": kind, "port": external.port, "protocol": "TCP"}
    if not _is_ip(external.address):
        body = {"type": "ExternalName", "externalName": external.address.lower(), "ports": [port]}
        return [{"apiVersion": "v1", "kind": "Service", "metadata": meta(spec, name), "spec": body}]
    slice_meta = meta(spec, name)
    slice_meta["labels"] = {**slice_meta["labels"], "kubernetes.io/service-name": name}
    family = "IPv4" if ipaddress.ip_address(external.address).version == 4 else "IPv6"
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(spec, name), "spec": {"ports": [port]}},
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": slice_meta,
            "addressType": family,
            "endpoints": [{"addresses": [external.address]}],
            "ports": [port],
        },
    ]


def _egress_ports(spec: Spec) -> list[int]:
    """Where the engine calls out: HTTP(S), and each model server's own port."""
    ports = {80, 443}
    for model in spec.models.providers.values():
        if model.api_base:
            parts = urlsplit(str(model.api_base))
            ports.add(parts.port or (443 if parts.scheme == "https" else 80))
    return sorted(ports)


def _state_egress(spec: Spec) -> list[dict]:
    rules = []
    for kind, used, default_port in (
        ("postgres", spec.deploy.state.history == "postgres", 5432),
        ("redis", spec.deploy.state.rate_limits == "redis", 6379),
    ):
        external = getattr(spec.kubernetes, kind)
        if external is None and not used:
            continue
        rule: dict = {"ports": [{"protocol": "TCP", "port": external.port if external else default_port}]}
        if external and _is_ip(external.address):
            bits = 32 if ipaddress.ip_address(external.address).version == 4 else 128
            rule["to"] = [{"ipBlock": {"cidr": f"{external.address}/{bits}"}}]
        rules.append(rule)
    return rules


def network_policy(spec: Spec) -> dict:
    controller = {"kubernetes.io/metadata.name": spec.kubernetes.ingress.controller_namespace}
    dns = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    egress = [
        {"ports": dns},
        {"ports": [{"protocol": "TCP", "port": port} for port in _egress_ports(spec)]},
        *_state_egress(spec),
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(spec, engine_name(spec)),
        "spec": {
            "podSelector": {"matchLabels": labels(spec)},
            "policyTypes": ["Ingress", "Egress"],
            # The Ingress controller only; the kubelet's probes are not subject to NetworkPolicy.
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": controller}}],
                    "ports": [{"protocol": "TCP", "port": spec.deploy.ports.engine}],
                }
            ],
            "egress": egress,
        },
    }
