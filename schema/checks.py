"""Rules that span sections of the spec: each returns (location, message, hint) triples."""

from __future__ import annotations

from collections.abc import Iterator

from ..engine.settings import BUILTIN_SKILLS
from .spec import Spec

Finding = tuple[tuple[str | int, ...], str, str | None]


def cross_check(spec: Spec) -> list[Finding]:
    """Every cross-section problem in a spec that passed the per-field validation."""
    return [
        *_model_references(spec),
        *_port_clashes(spec),
        *_host_references(spec),
        *_skills(spec),
        *_engine_only_hosts(spec),
    ]


def _engine_only_hosts(spec: Spec) -> Iterator[Finding]:
    """An engine without an edge of its own listens beyond loopback: only its edges, holding the
    shared secret, may reach it."""
    for i, host in enumerate(spec.deploy.hosts):
        if "engine" in host.roles and "edge" not in host.roles and spec.security.edge_secret is None:
            yield (
                ("deploy", "hosts", i, "roles"),
                f"host '{host.name}' runs the engine without the edge: it would listen beyond loopback unguarded",
                "set security.edge_secret: ${env:EDGE_SECRET} (nginx sends it, the engine requires it)",
            )


def _skills(spec: Spec) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, skill in enumerate(spec.tools.skills):
        module, _, name = skill.entrypoint.partition(":")
        if module == "builtin" and name not in BUILTIN_SKILLS:
            yield (
                ("tools", "skills", i, "entrypoint"),
                f"no builtin skill '{name}'",
                f"builtin skills: {', '.join(BUILTIN_SKILLS)}",
            )
        if skill.name in seen:
            yield ("tools", "skills", i, "name"), f"skill '{skill.name}' is declared twice", None
        seen.add(skill.name)


def _model_references(spec: Spec) -> Iterator[Finding]:
    declared = set(spec.models.providers)
    known = ", ".join(sorted(declared))
    if spec.models.default not in declared:
        yield ("models", "default"), f"default model '{spec.models.default}' is not declared", f"declared: {known}"
    seen: set[str] = set()
    for i, name in enumerate(spec.models.fallback):
        loc = ("models", "fallback", i)
        if name not in declared:
            yield loc, f"fallback model '{name}' is not declared", f"declared: {known}"
        if name == spec.models.default:
            yield loc, f"fallback '{name}' is the default model: it would fall back to itself", None
        if name in seen:
            yield loc, f"fallback '{name}' is listed twice", None
        seen.add(name)
    for channel_name in type(spec.channels).model_fields:
        channel = getattr(spec.channels, channel_name)
        if channel.model is not None and channel.model not in declared:
            yield (
                ("channels", channel_name, "model"),
                f"channel '{channel_name}' uses model '{channel.model}', which is not declared",
                f"declared: {known}",
            )


def _port_clashes(spec: Spec) -> Iterator[Finding]:
    monitoring = spec.monitoring
    services = [
        (("deploy", "ports", "http"), "nginx http", spec.deploy.ports.http, True),
        (("deploy", "ports", "https"), "nginx https", spec.deploy.ports.https, spec.security.tls.enabled),
        (("deploy", "ports", "engine"), "engine", spec.deploy.ports.engine, True),
        (("monitoring", "prometheus", "port"), "prometheus", monitoring.prometheus.port, monitoring.prometheus.enabled),
        (
            ("monitoring", "alertmanager", "port"),
            "alertmanager",
            monitoring.alertmanager.port,
            monitoring.alertmanager.enabled,
        ),
        (("monitoring", "grafana", "port"), "grafana", monitoring.grafana.port, monitoring.grafana.enabled),
    ]
    owners: dict[int, str] = {}
    for loc, service, port, active in services:
        if not active:
            continue
        if port in owners:
            yield loc, f"port {port} is used by both {owners[port]} and {service}", "give each service its own port"
        else:
            owners[port] = service


def _host_references(spec: Spec) -> Iterator[Finding]:
    names = [h.name for h in spec.deploy.hosts]
    for i, name in enumerate(names):
        if name in names[:i]:
            yield ("deploy", "hosts", i, "name"), f"host '{name}' is declared twice", None
    ha = spec.deploy.ha
    if ha is not None:
        for i, name in enumerate(ha.hosts):
            if name not in names:
                yield ("deploy", "ha", "hosts", i), f"HA host '{name}' is not in deploy.hosts", None
        if len(set(ha.hosts)) != len(ha.hosts):
            yield ("deploy", "ha", "hosts"), "the HA pair must be two different hosts", None
    state = spec.deploy.state
    engines = [h for h in spec.deploy.hosts if "engine" in h.roles]
    if len(engines) > 1 and state.history == "sqlite":
        yield (
            ("deploy", "state", "history"),
            f"{len(engines)} engine hosts cannot share an embedded SQLite history",
            "set deploy.state.history: postgres with postgres_dsn",
        )
    if state.history == "postgres" and state.postgres_dsn is None:
        yield ("deploy", "state"), "history 'postgres' needs postgres_dsn: ${env:...}", None
    if state.rate_limits == "redis" and state.redis_url is None:
        yield ("deploy", "state"), "rate_limits 'redis' needs redis_url: ${env:...}", None


def exposure_warnings(spec: Spec) -> list[str]:
    """Choices that are allowed but open the assistant wider than the defaults; plan shows them."""
    warnings = []
    if spec.security.anonymous == "anywhere":
        warnings.append(
            "security.anonymous is 'anywhere': every client that reaches the assistant chats and reads "
            "history as the one anonymous user, with no key or token"
        )
    return warnings
