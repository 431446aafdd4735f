"""The process supervisor: `supervisord.conf` and one `programs/<name>.conf` per service on the host.

supervisord runs `-c <root>/current/supervisor/supervisord.conf`; it resolves the relative include
glob against that file's folder, so `supervisorctl update` after a switch picks up exactly the
programs of the live release. Commands are shell-quoted word by word (supervisor splits them with
shlex) and every value then goes through `ini_value`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import elk
from .base import Files, Renderer, Target
from .prometheus import NODE_EXPORTER_PORT, host_port
from .templating import render_template

# System binaries are looked up on this PATH, not the one of whoever started supervisord
# (a non-login Ansible shell often lacks /usr/sbin, where nginx lives).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_MAX_BYTES = "50MB"
LOG_BACKUPS = 5
# Time an engine gets after SIGTERM beyond its longest request, to finish in-flight work.
ENGINE_STOP_GRACE_SECONDS = 10


@dataclass(frozen=True)
class Program:
    """One `[program:x]` section; `command` is a list of words, quoted when rendered."""

    name: str
    command: list[str]
    priority: int
    stopsignal: str = "TERM"
    stopwaitsecs: int = 10
    startsecs: int = 2
    startretries: int = 5
    environment: dict[str, str] = field(default_factory=dict)


def engine_program(target: Target) -> Program:
    request_seconds = target.spec.limits.timeouts.request_seconds
    return Program(
        name="engine",
        command=[target.python, "-m", "assistantctl.engine", "--settings", f"{target.current}/engine/settings.json"],
        priority=100,
        stopwaitsecs=math.ceil(request_seconds) + ENGINE_STOP_GRACE_SECONDS,
        startsecs=3,
        environment={"PYTHONUNBUFFERED": "1"},
    )


def nginx_program(target: Target) -> Program:
    return Program(
        name="nginx",
        command=[
            "nginx",
            "-p",
            f"{target.current}/nginx/",
            "-c",
            "nginx.conf",
            "-e",
            target.path("logs", "nginx-error.log"),
        ],
        priority=200,  # after the engine, so the proxy rarely answers 502 at start
        stopsignal="QUIT",  # graceful: finish requests in flight
        stopwaitsecs=30,
        environment={"PATH": SYSTEM_PATH},
    )


def prometheus_program(target: Target) -> Program:
    prometheus = target.spec.monitoring.prometheus
    return Program(
        name="prometheus",
        command=[
            "prometheus",
            f"--config.file={target.current}/prometheus/prometheus.yml",
            f"--storage.tsdb.path={target.path('data', 'prometheus')}",
            f"--web.listen-address=127.0.0.1:{prometheus.port}",
            f"--storage.tsdb.retention.time={prometheus.retention_days}d",
        ],
        priority=300,
        stopwaitsecs=60,  # flushes the head block on shutdown
        environment={"PATH": SYSTEM_PATH},
    )


def alertmanager_program(target: Target) -> Program:
    alertmanager = target.spec.monitoring.alertmanager
    return Program(
        name="alertmanager",
        command=[
            "prometheus-alertmanager",
            f"--config.file={target.current}/alertmanager/alertmanager.yml",
            f"--storage.path={target.path('data', 'alertmanager')}",
            f"--web.listen-address=127.0.0.1:{alertmanager.port}",
            "--cluster.listen-address=",  # a single node: no gossip port
        ],
        priority=300,
        environment={"PATH": SYSTEM_PATH},
    )


def scraped_by_prometheus(target: Target) -> bool:
    """Whether a Prometheus of this spec scrapes this host's node_exporter (it scrapes every host)."""
    spec = target.spec
    return spec.monitoring.prometheus.enabled and any("monitoring" in h.roles for h in spec.deploy.hosts)


def node_exporter_program(target: Target) -> Program:
    """Host metrics on the host's own address only, where Prometheus scrapes it (never 0.0.0.0)."""
    return Program(
        name="node_exporter",
        command=[
            "prometheus-node-exporter",
            f"--web.listen-address={host_port(target.host.address, NODE_EXPORTER_PORT)}",
            # the filesystem alert reads mounts of the host's own disks, not of containers or snaps
            "--collector.filesystem.mount-points-exclude=^/(dev|proc|run|sys|var/lib/docker/.+|snap/.+)($|/)",
        ],
        priority=50,  # first: a host's metrics are there even while its services start
        environment={"PATH": SYSTEM_PATH},
    )


def grafana_program(target: Target) -> Program:
    """Grafana from Grafana's APT repository (`grafana server`, Grafana >= 10), on the rendered ini."""
    return Program(
        name="grafana",
        command=[
            "grafana",
            "server",
            "--config",
            f"{target.current}/grafana/grafana.ini",
            "--homepath",
            "/usr/share/grafana",
        ],
        priority=300,
        stopwaitsecs=30,
        environment={"PATH": SYSTEM_PATH},
    )


def filebeat_program(target: Target) -> Program:
    """Filebeat from Elastic's APT repository; it logs where filebeat.yml says (logging.files)."""
    return Program(
        name="filebeat",
        command=[
            "filebeat",
            "-c",
            f"{target.current}/elk/filebeat.yml",
            "--path.home",
            "/usr/share/filebeat",
            "--path.config",
            f"{target.current}/elk",
        ],
        priority=350,  # after the services whose logs it tails
        stopwaitsecs=30,  # flushes its registry on shutdown
        environment={"PATH": SYSTEM_PATH},
    )


def logstash_program(target: Target) -> Program:
    """Logstash from Elastic's APT repository. It re-reads the pipeline file on its own
    (`--config.reload.automatic`), so a switch of `current` reaches it without a restart."""
    return Program(
        name="logstash",
        command=[
            "/usr/share/logstash/bin/logstash",
            "--path.settings",
            "/etc/logstash",
            "--path.data",
            target.path("data", "logstash"),
            "--path.logs",
            target.path("logs", "logstash"),
            "-f",
            f"{target.current}/elk/logstash/pipeline.conf",
            "--config.reload.automatic",
        ],
        priority=250,  # before Filebeat, which ships to it
        startsecs=10,  # a JVM: it takes a while to be up for good
        stopwaitsecs=60,  # drains its in-flight events on shutdown
        environment={"PATH": SYSTEM_PATH},
    )


def keepalived_program(target: Target) -> Program:
    """VRRP only (`-P`), in the foreground, logging to stdout, with pid files of its own."""
    return Program(
        name="keepalived",
        command=[
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-P",
            "-f",
            f"{target.current}/keepalived/keepalived.conf",
            "-p",
            target.path("run", "keepalived.pid"),
            "-r",
            target.path("run", "keepalived-vrrp.pid"),
        ],
        priority=400,  # last: take the virtual IP only once the services behind it run
        stopwaitsecs=10,  # on TERM it drops the virtual IP and tells the peer (priority 0)
        environment={"PATH": SYSTEM_PATH},
    )


def programs(target: Target) -> list[Program]:
    """The programs this host runs, in start order."""
    monitoring = target.spec.monitoring
    found = [node_exporter_program(target)] if scraped_by_prometheus(target) else []
    if target.has_role("engine"):
        found.append(engine_program(target))
    if target.has_role("edge"):
        found.append(nginx_program(target))
    if target.has_role("monitoring") and monitoring.prometheus.enabled:
        found.append(prometheus_program(target))
    if target.has_role("monitoring") and monitoring.alertmanager.enabled:
        found.append(alertmanager_program(target))
    if target.has_role("monitoring") and monitoring.grafana.enabled:
        found.append(grafana_program(target))
    if monitoring.logging.elk.enabled and elk.runs_logstash(target):
        found.append(logstash_program(target))
    if monitoring.logging.elk.enabled:
        found.append(filebeat_program(target))
    if target.spec.deploy.ha is not None and target.host.name in target.spec.deploy.ha.hosts:
        found.append(keepalived_program(target))
    return found


def render(target: Target) -> Files:
    files = {
        "supervisord.conf": render_template(
            "supervisor/supervisord.conf.j2",
            host=target.host.name,
            root=target.root,
            socket=target.path("run", "supervisor.sock"),
            pidfile=target.path("run", "supervisord.pid"),
            logfile=target.path("logs", "supervisord.log"),
            logs=target.path("logs"),
            log_max_bytes=LOG_MAX_BYTES,
            log_backups=LOG_BACKUPS,
        )
    }
    for program in programs(target):
        files[f"programs/{program.name}.conf"] = render_template(
            "supervisor/program.conf.j2",
            program=program,
            directory=target.root,
            log=target.path("logs", f"{program.name}.out.log"),
            log_max_bytes=LOG_MAX_BYTES,
            log_backups=LOG_BACKUPS,
        )
    return files


# supervisord's own option parser reads the staged file and its includes without starting anything.
_CHECK = (
    "{python} -c 'import sys; from supervisor.options import ServerOptions; "
    'ServerOptions().realize(["-c", sys.argv[1]])\' {dir}/supervisord.conf'
)

RENDERER = Renderer(name="supervisor", service="supervisor", render=render, check=_CHECK)
