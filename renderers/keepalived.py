"""The virtual IP of an HA pair: `keepalived.conf` and `notify.sh` on the two hosts of deploy.ha.

keepalived runs `-f <root>/current/keepalived/keepalived.conf`. VRRP goes unicast between the two
host addresses (no multicast needed on cloud networks). A failing health check (`/health` through
the host's nginx on an edge host, of the engine on an engine-only host) puts the instance in FAULT
(the check has no `weight`), so the VIP leaves a node that cannot serve whatever the priorities
say; the MASTER takes it back when it is healthy again (preempt).

The VRRP password is a secret: keepalived cannot read `auth_pass` from a file, so the
`authentication` block lives in `auth.conf` (mode 0600, written at apply time by `secret_files`)
and `keepalived.conf` includes it. keepalived resolves a relative include against the including
file's folder, so a staged release is checked with its own `auth.conf`.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

from ..schema.spec import HighAvailability, Host, Spec
from .base import Files, Renderer, Target
from .escape import UnsafeValue, keepalived_word
from .templating import render_template

AUTH_FILE = "auth.conf"
AUTH_SECRET = "deploy.ha.auth_password"
# VRRPv2 PASS authentication compares 8 bytes; keepalived silently truncates longer ones.
AUTH_PASS_MAX = 8
MASTER_PRIORITY, BACKUP_PRIORITY = 150, 100
CURL = "/usr/bin/curl"
NOTIFY_LOG = "keepalived-notify.log"
# keepalived 2.2 `-t` kills itself (SIGTERM, rc 143) when a script runs as a non-root user, so the
# scripts run as root; enable_script_security still refuses scripts writable by anyone else.
SCRIPT_USER = "root"


def _ha(target: Target) -> HighAvailability:
    ha = target.spec.deploy.ha
    if ha is None:
        raise ValueError("keepalived renders only when deploy.ha is set")
    return ha


def _ipv4(host: Host) -> str:
    """VRRPv2 unicast needs IPv4 literals on both ends, the family of the virtual IP."""
    try:
        address = ip_address(host.address)
    except ValueError:
        address = None
    if not isinstance(address, IPv4Address):
        raise ValueError(
            f"HA host '{host.name}' has address '{host.address}': keepalived unicast needs an IPv4 address"
        )
    return str(address)


def peers(target: Target) -> tuple[Host, Host]:
    """(this host, the other one) of the HA pair."""
    ha = _ha(target)
    by_name = {h.name: h for h in target.spec.deploy.hosts}
    mine, other = (ha.hosts[0], ha.hosts[1]) if target.host.name == ha.hosts[0] else (ha.hosts[1], ha.hosts[0])
    return by_name[mine], by_name[other]


def priority(target: Target) -> int:
    ha = _ha(target)
    if target.host.ha_priority is not None:
        return target.host.ha_priority
    return MASTER_PRIORITY if target.host.name == ha.hosts[0] else BACKUP_PRIORITY


def served_port(spec: Spec, host: Host) -> int:
    """The port the virtual IP serves on `host`: nginx's on an edge host (nginx and the engine
    behind it), the engine's own on an engine-only host."""
    ports = spec.deploy.ports
    return ports.http if "edge" in host.roles else ports.engine


def context(target: Target) -> dict[str, object]:
    ha = _ha(target)
    me, other = peers(target)
    src, peer = _ipv4(me), _ipv4(other)
    if src == peer:
        raise ValueError(f"HA hosts '{me.name}' and '{other.name}' share the address {src}: give each its own")
    port = served_port(target.spec, target.host)
    return {
        "host": me.name,
        "instance": target.spec.name,
        "state": "MASTER" if me.name == ha.hosts[0] else "BACKUP",
        "interface": ha.interface,
        "router_id": ha.router_id,
        "priority": priority(target),
        "src_ip": src,
        "peer_ip": peer,
        "virtual_ip": str(ha.virtual_ip),
        "script_user": SCRIPT_USER,
        "check": [CURL, "-fsS", "--max-time", "2", f"http://127.0.0.1:{port}/health"],
        "notify": ["/bin/sh", f"{target.current}/keepalived/notify.sh"],
        "auth_file": AUTH_FILE if ha.auth_password is not None else None,
    }


def render(target: Target) -> Files:
    return {
        "keepalived.conf": render_template("keepalived/keepalived.conf.j2", **context(target)),
        "notify.sh": render_template(
            "keepalived/notify.sh.j2", host=target.host.name, log=target.path("logs", NOTIFY_LOG)
        ),
    }


def secret_files(target: Target, values: dict[str, str]) -> Files:
    """`auth.conf` with the VRRP password. Errors name the secret, never its value."""
    if AUTH_SECRET not in values:
        return {}
    password = values[AUTH_SECRET]
    try:
        keepalived_word(password)
    except UnsafeValue:
        raise UnsafeValue(
            f"{AUTH_SECRET}: keepalived cannot read a password holding whitespace, quotes, '#', '!', "
            "braces or backslashes"
        ) from None
    if len(password.encode()) > AUTH_PASS_MAX:
        raise UnsafeValue(f"{AUTH_SECRET}: VRRP PASS authentication uses at most {AUTH_PASS_MAX} bytes")
    return {AUTH_FILE: render_template("keepalived/auth.conf.j2", password=password)}


def _applies(target: Target) -> bool:
    ha = target.spec.deploy.ha
    return ha is not None and target.host.name in ha.hosts


RENDERER = Renderer(
    name="keepalived",
    service="keepalived",
    render=render,
    applies=_applies,
    # Needs root and the configured interface (rc 5 without it), which an HA host has.
    check="keepalived -t -f {dir}/keepalived.conf",
    secret_files=secret_files,
)
