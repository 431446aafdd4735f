"""The same deployment as one Docker Compose project: `docker-compose.yml` plus the configs its
containers read, rendered for the first host only (a compose file describes one machine).

The spec is collapsed onto one node (address 127.0.0.1, every role, no HA) and the other renderers
run unchanged against it with the deploy root `/srv/assistant` inside the containers; each
rendered file is bind-mounted read-only at `/srv/assistant/current/<renderer>/<path>`, the place
it has on a host. The engine and nginx share one network namespace like a Kubernetes pod, so the
engine stays on loopback, reachable from nowhere but its own proxy; the namespace belongs to a `pod`
service that does nothing but hold it and publish nginx's ports, so the engine or nginx can crash
and be restarted without taking the other's network with it. Monitoring and ELK run apart on
networks of their own and reach each other by service name (compose_networks.py).

The images `assistantctl/<service>` are built by `assistantctl compose --build` (images.py) and
tagged with the engine runtime id, read from `.env` (`ASSISTANTCTL_IMAGE_TAG`); Grafana and ELK use
their vendors' public images. Secret values are compose `secrets:` (`file: ./secrets/<name>`),
written only by `assistantctl compose --secrets`, and mounted where the reused configs expect their
secret files. ELK is behind the `elk` profile (compose file format 3.9, docker-compose >= 1.28):
`docker-compose --profile elk up` (compose_elk.py). Compose interpolates `$` in every string of the
file, so the one YAML writer here doubles it (the image tag reference is the one interpolation it
keeps).
"""

from __future__ import annotations

import math
from posixpath import isabs, join

from ..schema.secrets import secret_refs
from ..schema.spec import Spec
from . import adapters, alertmanager, compose_elk, elk, engine, grafana, nginx, prometheus, skills
from . import compose_networks as nets
from . import compose_parts as parts
from .base import Files, Renderer, Target
from .compose_parts import IMAGES, ROOT
from .prometheus import dump_yaml
from .supervisor import ENGINE_STOP_GRACE_SECONDS

COMPOSE_FILE = "docker-compose.yml"
FORMAT_VERSION = "3.9"  # the first v3 format with `profiles`
# Built by images.py; the tag comes from `.env`, so a stack never runs images it was not built for.
TAG_VARIABLE = "ASSISTANTCTL_IMAGE_TAG"
BUILT_REFERENCE = ":${" + TAG_VARIABLE + ":?build the images first: assistantctl compose --build}"
# The renderers whose files the containers read, in service order.
REUSED = (engine, skills, adapters, nginx, prometheus, alertmanager, grafana, elk)
# An engine worker is one Python process; the base covers the supervisor process and page cache.
ENGINE_MEMORY_BASE_MB, ENGINE_MEMORY_PER_WORKER_MB = 256, 256
SHARED_NETWORK = "service:pod"


def compose_spec(spec: Spec) -> Spec:
    """The spec collapsed onto one local node that has every role and no HA pair, whose metrics the
    monitoring network may read."""
    first = spec.deploy.hosts[0]
    host = first.model_copy(
        update={"address": "127.0.0.1", "connection": "local", "roles": ["engine", "edge", "monitoring", "logging"]}
    )
    collapsed = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"hosts": [host], "ha": None})})
    return nets.admit_monitoring(collapsed)


def container_target(target: Target) -> Target:
    spec = compose_spec(target.spec)
    return Target(spec=spec, host=spec.deploy.hosts[0], root=ROOT, python="python")


def _reused(ct: Target) -> list:
    return [module for module in REUSED if module.RENDERER.applies(ct)]


def _secret_name(renderer: str, path: str) -> str:
    return f"{renderer}-{path.replace('/', '-')}"


def _secret_paths(ct: Target, module: object) -> list[str]:
    """Paths of the secret files a renderer writes when every secret of the spec has a value.
    Only the names matter here; the placeholder never reaches a file."""
    placeholders = {name: "placeholder" for name in secret_refs(ct.spec)}
    return sorted(module.RENDERER.secret_files(ct, placeholders))


def _secrets(ct: Target, module: object) -> list[dict]:
    name = module.RENDERER.name
    return [
        {"source": _secret_name(name, path), "target": parts.current(name, path)} for path in _secret_paths(ct, module)
    ]


def _secret_reader(ct: Target, module: object) -> dict:
    """docker-compose mounts a file secret as a plain bind (owner, group and mode are swarm-only),
    so a 0600 root-owned secret file is readable only by root in the container."""
    return {"secrets": _secrets(ct, module), "user": "0:0" if _secret_paths(ct, module) else None}


def _pod(ct: Target) -> dict:
    """The namespace holder: it only sleeps, so it never restarts and the namespace outlives any crash."""
    spec = ct.spec
    ports = [f"{spec.deploy.ports.http}:{spec.deploy.ports.http}"]
    if spec.security.tls.enabled:
        ports.append(f"{spec.deploy.ports.https}:{spec.deploy.ports.https}")
    # PID 1 ignores SIGTERM unless it handles it: exit at once on `down`.
    hold = "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()"
    monitored = prometheus.RENDERER.applies(ct)
    return parts.service(
        IMAGES["pod"],
        command=["python3", "-c", hold],
        ports=ports,
        networks=nets.pod_networks(monitored),
        mem_limit="32m",
    )


def _engine(target: Target, ct: Target) -> dict:
    spec = ct.spec
    workers = spec.limits.concurrency.workers
    port = spec.deploy.ports.engine
    return parts.service(
        IMAGES["engine"],
        command=["python", "-m", "assistantctl.engine", "--settings", parts.current("engine", "settings.json")],
        environment={"PYTHONUNBUFFERED": "1"},
        network_mode=SHARED_NETWORK,
        volumes=[
            f"data:{ROOT}/data",
            f"logs:{ROOT}/logs",
            *parts.config_binds(ct, engine),
            *parts.config_binds(ct, skills),
            *parts.config_binds(ct, adapters),
        ],
        secrets=_secrets(ct, engine),
        healthcheck={**parts.http_probe(f"http://127.0.0.1:{port}/health", "5s"), "start_period": "20s"},
        cpus=float(workers),
        mem_limit=f"{ENGINE_MEMORY_BASE_MB + ENGINE_MEMORY_PER_WORKER_MB * workers}m",
        stop_grace_period=f"{math.ceil(spec.limits.timeouts.request_seconds) + ENGINE_STOP_GRACE_SECONDS}s",
    )


def _nginx(target: Target, ct: Target) -> dict:
    volumes = [f"logs:{ROOT}/logs", *parts.config_binds(ct, nginx)]
    tls = ct.spec.security.tls
    if tls.enabled:
        # Certificates come from the docker host's deploy root (or absolute paths) at the path
        # the rendered site.conf names inside the container.
        for path in (tls.certificate, tls.key):
            source = path if isabs(path) else join(target.root, path)
            volumes.append(f"{source}:{path if isabs(path) else join(ROOT, path)}:ro")
    return parts.service(
        IMAGES["nginx"],
        command=["nginx", "-p", f"{ROOT}/current/nginx/", "-c", "nginx.conf", "-e", f"{ROOT}/logs/nginx-error.log"],
        network_mode=SHARED_NETWORK,
        depends_on=parts.healthy("engine"),
        # Plain-HTTP /health answers even with TLS on (site.conf), through nginx to the engine.
        healthcheck=parts.http_probe(f"http://127.0.0.1:{ct.spec.deploy.ports.http}/health"),
        volumes=volumes,
        tmpfs=[f"{ROOT}/run", f"{ROOT}/tmp/nginx"],
    )


def _monitoring(ct: Target) -> dict[str, dict]:
    spec = ct.spec.monitoring
    services = {}
    if prometheus.RENDERER.applies(ct):
        services["prometheus"] = parts.service(
            IMAGES["prometheus"],
            command=[
                f"--config.file={parts.current('prometheus', 'prometheus.yml')}",
                "--storage.tsdb.path=/prometheus",
                f"--web.listen-address=:{spec.prometheus.port}",
                f"--storage.tsdb.retention.time={spec.prometheus.retention_days}d",
            ],
            networks=[nets.MONITORING],
            healthcheck=parts.http_probe(f"http://127.0.0.1:{spec.prometheus.port}/-/healthy"),
            volumes=["prometheus-data:/prometheus", *parts.config_binds(ct, prometheus)],
        )
        services["node-exporter"] = _node_exporter()
    if alertmanager.RENDERER.applies(ct):
        services["alertmanager"] = parts.service(
            IMAGES["alertmanager"],
            command=[
                f"--config.file={parts.current('alertmanager', 'alertmanager.yml')}",
                "--storage.path=/alertmanager",
                f"--web.listen-address=:{spec.alertmanager.port}",
                "--cluster.listen-address=",
            ],
            networks=[nets.MONITORING],
            healthcheck=parts.http_probe(f"http://127.0.0.1:{spec.alertmanager.port}/-/healthy"),
            volumes=["alertmanager-data:/alertmanager", *parts.config_binds(ct, alertmanager)],
            **_secret_reader(ct, alertmanager),
        )
    if grafana.RENDERER.applies(ct):
        services["grafana"] = parts.service(
            IMAGES["grafana"],
            # The image's GF_PATHS_* variables would override grafana.ini: point them at the
            # rendered files and at the image's own (writable) data and log folders.
            environment={
                "GF_PATHS_CONFIG": parts.current("grafana", "grafana.ini"),
                "GF_PATHS_PROVISIONING": parts.current("grafana", "provisioning"),
                "GF_PATHS_DATA": "/var/lib/grafana",
                "GF_PATHS_LOGS": "/var/log/grafana",
            },
            networks=[nets.MONITORING],
            healthcheck=parts.http_probe(f"http://127.0.0.1:{spec.grafana.port}/api/health"),
            volumes=["grafana-data:/var/lib/grafana", *parts.config_binds(ct, grafana)],
            **_secret_reader(ct, grafana),
        )
    return services


def _node_exporter() -> dict:
    """The exporter behind Prometheus' `node` job: the docker host's /proc, /sys and file systems,
    read-only, measured from a namespace of its own on the monitoring network."""
    return parts.service(
        IMAGES["node-exporter"],
        command=[
            "--path.procfs=/host/proc",
            "--path.sysfs=/host/sys",
            "--path.rootfs=/host/root",
            f"--web.listen-address=:{prometheus.NODE_EXPORTER_PORT}",
        ],
        networks=[nets.MONITORING],
        healthcheck=parts.http_probe(f"http://127.0.0.1:{prometheus.NODE_EXPORTER_PORT}/metrics"),
        volumes=["/proc:/host/proc:ro", "/sys:/host/sys:ro", "/:/host/root:ro"],
        mem_limit="64m",
    )


def build_compose(target: Target) -> dict:
    ct = container_target(target)
    services = {
        "pod": _pod(ct),
        "engine": _engine(target, ct),
        "nginx": _nginx(target, ct),
        **_monitoring(ct),
        **compose_elk.elk_services(ct),
    }
    named = sorted(
        {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(("./", "/"))}
    )
    secrets = sorted(s["source"] for service in services.values() for s in service.get("secrets", []))
    compose: dict = {"version": FORMAT_VERSION, "services": services, "volumes": {name: {} for name in named}}
    if nets.networks(services):
        compose["networks"] = nets.networks(services)
    if secrets:
        compose["secrets"] = {name: {"file": f"./secrets/{name}"} for name in secrets}
    return compose


def _literal(value: object) -> object:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {_literal(k): _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value


def compose_yaml(compose: dict) -> str:
    """The compose file's one writer: compose expands `$VAR` in keys and values, `$$` is a literal `$`;
    the built images' tag is the one reference left for compose to fill (from `.env`)."""
    escaped = _literal(compose)
    built = {image for service, image in IMAGES.items() if image.startswith("assistantctl/")}
    for service in escaped["services"].values():
        if service["image"] in built:
            service["image"] += BUILT_REFERENCE
    return dump_yaml(escaped)


# Reused files whose loopback addresses become service names on the compose networks.
_ACROSS_NETWORKS = {
    "prometheus/prometheus.yml": nets.prometheus_config,
    "grafana/provisioning/datasources/prometheus.yml": nets.grafana_datasources,
}


def _module_target(ct: Target, module: object) -> Target:
    return compose_elk.logging_target(ct) if module is elk else ct


def render(target: Target) -> Files:
    ct = container_target(target)
    files = {COMPOSE_FILE: compose_yaml(build_compose(target))}
    for module in _reused(ct):
        for path, text in module.RENDERER.render(_module_target(ct, module)).items():
            files[f"{module.RENDERER.name}/{path}"] = text
    for path, rewrite in _ACROSS_NETWORKS.items():
        if path in files:
            files[path] = rewrite(files[path], ct.spec)
    return dict(sorted(files.items()))


def secret_files(target: Target, values: dict[str, str]) -> Files:
    """`secrets/<name>` for every compose secret: the reused renderers' own secret files."""
    ct = container_target(target)
    files = {}
    for module in _reused(ct):
        for path, text in module.RENDERER.secret_files(_module_target(ct, module), values).items():
            files[f"secrets/{_secret_name(module.RENDERER.name, path)}"] = text
    return dict(sorted(files.items()))


# `config -q` validates the file (schema, interpolation, references) without a daemon and without
# reading `./secrets/*` or the bind sources, so a bundle rendered without secret values checks too;
# render --check gives it a stand-in image tag and says it built and started nothing (checks.py).
RENDERER = Renderer(
    name="compose",
    service="compose",
    render=render,
    applies=lambda t: t.host.name == t.spec.deploy.hosts[0].name,
    check="docker-compose -f {dir}/docker-compose.yml config -q",
    secret_files=secret_files,
    shipped=False,
)
