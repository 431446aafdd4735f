"""The pieces every service of the compose file is made of (renderers/compose.py, compose_elk.py):
where the rendered configs land in a container, read-only binds of them, healthchecks and the
restart policy."""

from __future__ import annotations

from .base import Target

ROOT = "/srv/assistant"  # the deploy root inside every container
RESTART = "unless-stopped"
# `assistantctl/*` are built by images.py; the others come from their vendors' registries.
IMAGES = {
    "pod": "assistantctl/base",
    "engine": "assistantctl/engine",
    "nginx": "assistantctl/nginx",
    "prometheus": "assistantctl/prometheus",
    "alertmanager": "assistantctl/alertmanager",
    "node-exporter": "assistantctl/node-exporter",
    "grafana": "grafana/grafana:9.5.15",
    "elasticsearch": "docker.elastic.co/elasticsearch/elasticsearch:8.11.3",
    "logstash": "docker.elastic.co/logstash/logstash:8.11.3",
    "kibana": "docker.elastic.co/kibana/kibana:8.11.3",
    "filebeat": "docker.elastic.co/beats/filebeat:8.11.3",
}


def current(name: str, path: str) -> str:
    return f"{ROOT}/current/{name}/{path}"


def config_binds(ct: Target, module: object, only: tuple[str, ...] = ()) -> list[str]:
    name = module.RENDERER.name
    return [
        f"./{name}/{path}:{current(name, path)}:ro"
        for path in sorted(module.RENDERER.render(ct))
        if not only or path.startswith(only)
    ]


def service(image: str, **fields: object) -> dict:
    """A service with the stack's restart policy; empty fields are left out."""
    built = {"image": image, "restart": RESTART}
    built.update({key: value for key, value in fields.items() if value})
    return built


def healthy(service: str) -> dict:
    return {service: {"condition": "service_healthy"}}


def http_probe(url: str, interval: str = "10s") -> dict:
    """A healthcheck for the built images (curl is in their base) and Grafana's (busybox `wget`)."""
    if url.endswith("/api/health"):
        return {
            "test": ["CMD", "wget", "-q", "-O", "/dev/null", url],
            "interval": interval,
            "timeout": "3s",
            "retries": 3,
        }
    return {
        "test": ["CMD", "curl", "-fsS", "-m", "2", "-o", "/dev/null", url],
        "interval": interval,
        "timeout": "3s",
        "retries": 3,
    }
