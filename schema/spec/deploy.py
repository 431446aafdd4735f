"""`deploy:` hosts, ports and how a change is rolled out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..types import HostName, IPv4Addr, Name, Port, SafePath, SecretRef, ServerName
from .base import Strict

Role = Literal["engine", "edge", "monitoring", "logging"]


class Host(Strict):
    name: Name = Field(description="The host's name in plans, --host and the HA pair.")
    address: HostName = Field("127.0.0.1", description="DNS name or IP address SSH and the other hosts reach it at.")
    connection: Literal["local", "ssh"] = Field(
        "local", description="local: this machine, no SSH; ssh: over SSH to address."
    )
    ssh_user: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_-]*$",
        description="User to log in as; unset: from ssh_config or the current user.",
    )
    ssh_port: Port = Field(22, description="TCP port of the host's SSH server.")
    ssh_config: SafePath | None = Field(
        None,
        description="An ssh_config(5) file for the connections to this host (ssh -F): key, known hosts, "
        "jump host...; relative to the spec. Unset: the controller user's own ssh configuration.",
    )
    roles: list[Role] = Field(
        default_factory=lambda: ["engine", "edge"],
        description="What runs here: engine, edge (nginx), monitoring (Prometheus...), logging; "
        "default: engine and edge.",
    )
    python: SafePath | None = Field(
        None, description="Interpreter on the host; unset on a local host means the one running assistantctl."
    )
    ha_priority: int | None = Field(
        None, ge=1, le=254, description="keepalived priority; unset: 150 for the first HA host, 100 for the second."
    )


class Ports(Strict):
    http: Port = Field(8080, description="Port nginx serves HTTP on (the redirect to HTTPS when TLS is on).")
    https: Port = Field(8443, description="Port nginx serves HTTPS on, when TLS is enabled.")
    engine: Port = Field(8081, description="Port the engine listens on behind nginx (loopback unless engine-only).")


class HighAvailability(Strict):
    virtual_ip: IPv4Addr = Field(description="IPv4 address keepalived moves to whichever host is healthy.")
    interface: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,15}$", description="Network interface that carries the virtual IP, e.g. eth0."
    )
    router_id: int = Field(
        51, ge=1, le=255, description="VRRP virtual router id; unique among the pairs on one network."
    )
    hosts: list[Name] = Field(min_length=2, max_length=2, description="Master first, then backup.")
    auth_password: SecretRef | None = Field(None, description="VRRP password shared by the pair; unset: none.")


class SharedState(Strict):
    history: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="Where conversation history lives: a SQLite file per node, or PostgreSQL (needs "
        "postgres_dsn; required with more than one engine host).",
    )
    postgres_dsn: SecretRef | None = Field(None, description="PostgreSQL DSN (postgresql://...) for history: postgres.")
    rate_limits: Literal["memory", "redis"] = Field(
        "memory",
        description="Where the limits' buckets live. memory: each node keeps its own (its workers share a "
        "SQLite file in the data dir); redis: one set for every node (needs redis_url).",
    )
    redis_url: SecretRef | None = Field(None, description="Redis URL (redis://...) for rate_limits: redis.")


class Deploy(Strict):
    root: SafePath = Field(".assistant", description="Where releases, data and logs live; relative to the spec.")
    server_name: ServerName = Field(
        "localhost", description="nginx server_name: a DNS name, or *.example.com / www.example.*."
    )
    ports: Ports = Field(Ports(), description="TCP ports of nginx and the engine on every host.")
    hosts: list[Host] = Field(
        default_factory=lambda: [Host(name="local")],
        min_length=1,
        description="The machines to deploy to; default: this one, as host 'local'.",
    )
    ha: HighAvailability | None = Field(None, description="A virtual IP shared by two hosts; unset: no failover.")
    state: SharedState = Field(SharedState(), description="Where history and rate-limit state live.")
    serial: int = Field(1, ge=1, description="Hosts updated at once during a rolling apply.")
    max_fail_percentage: int = Field(
        0, ge=0, le=100, description="% of hosts that may fail before a rolling apply stops; 0: the first failure."
    )
    connect_timeout_seconds: int = Field(
        10,
        ge=1,
        le=300,
        description="How long to wait for an SSH host to answer (ssh ConnectTimeout) before reporting it "
        "unreachable; a reached host then gets 60 s more to answer.",
    )
    health_check_seconds: int = Field(
        40,
        ge=5,
        le=600,
        description="How long apply waits for a host's engine (and nginx) to answer /health with the new "
        "release's settings before it calls the apply failed and puts the previous release back.",
    )
    overrides: SafePath = Field(
        "overrides",
        description="Folder of files merged over the rendered ones: overrides/<renderer>/<path> matches "
        "<renderer>/<path> (YAML/JSON deep-merge, INI key by key, nginx snippets in http.d/ and server.d/); "
        "relative to the spec. A missing folder means no overrides.",
    )
