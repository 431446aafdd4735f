"""Which compose networks the stack's services join, and the reused configs rewritten to reach each
other by service name across them (renderers/compose.py builds the services).

The engine and nginx share the `pod` container's network namespace, as on a host: the engine
listens on loopback only, so nothing but its own nginx can reach it, and a restarted engine or
nginx finds the other at the same address. Everything else runs in a namespace of its own and
joins only the networks it needs, so a compromised Grafana or Logstash never sees the engine's
loopback port:

- `monitoring` (subnet MONITORING_SUBNET, set explicitly because nginx's and the engine's metrics
  allow-lists must name it): the pod (alias `nginx`), Prometheus, Alertmanager, Grafana and
  node-exporter. Prometheus scrapes the engine through nginx's metrics location, as it does an
  edge host; Grafana and Prometheus reach Prometheus and Alertmanager by service name.
- `logging`: Filebeat, Logstash and (when local) Elasticsearch and Kibana. They share log files
  through the `logs` volume, not the network, so the pod is not on it.
- `default`: the pod alone, for the ports it publishes.
"""

from __future__ import annotations

from ipaddress import IPv4Network

import yaml

from ..schema.spec import Spec
from .base import Target
from .prometheus import NODE_EXPORTER_PORT, dump_yaml

MONITORING = "monitoring"
LOGGING = "logging"
# Outside docker's default address pools (172.17-31.0.0/16, 192.168.0.0/16), so an automatically
# allocated network does not take it first.
MONITORING_SUBNET = "10.213.47.0/24"
NGINX_ALIAS = "nginx"  # the pod on the monitoring network: what Prometheus scrapes
LOCAL_ELASTICSEARCH = "http://elasticsearch:9200"
LOGSTASH = "logstash"


def networks(services: dict[str, dict]) -> dict[str, dict]:
    """The top-level `networks:` for the networks `services` join."""
    used = {name for service in services.values() for name in service.get("networks", ())}
    declared: dict[str, dict] = {}
    if "default" in used:
        declared["default"] = {}
    if MONITORING in used:
        declared[MONITORING] = {"ipam": {"config": [{"subnet": MONITORING_SUBNET}]}}
    if LOGGING in used:
        declared[LOGGING] = {}
    return declared


def pod_networks(monitored: bool) -> dict[str, dict]:
    """The pod's networks; none named (compose's default alone) when nothing monitors it."""
    if not monitored:
        return {}
    return {"default": {}, MONITORING: {"aliases": [NGINX_ALIAS]}}


def admit_monitoring(spec: Spec) -> Spec:
    """`spec` with the monitoring subnet among the networks nginx and the engine let read metrics."""
    metrics = spec.monitoring.metrics
    subnet = IPv4Network(MONITORING_SUBNET)
    if not spec.monitoring.prometheus.enabled or subnet in metrics.allow_networks:
        return spec
    metrics = metrics.model_copy(update={"allow_networks": [*metrics.allow_networks, subnet]})
    monitoring = spec.monitoring.model_copy(update={"metrics": metrics})
    return spec.model_copy(update={"monitoring": monitoring})


def logging_target(ct: Target, local_elasticsearch: bool) -> Target:
    """The target the ELK configs are rendered for: Logstash is the host `logstash` (Filebeat dials
    it, it listens on it), and a compose-local Elasticsearch is the service `elasticsearch`."""
    spec = ct.spec
    host = ct.host.model_copy(update={"address": LOGSTASH})
    deploy = spec.deploy.model_copy(update={"hosts": [host]})
    update: dict = {"deploy": deploy}
    if local_elasticsearch:
        elk = spec.monitoring.logging.elk.model_copy(update={"elasticsearch_hosts": [LOCAL_ELASTICSEARCH]})
        logging = spec.monitoring.logging.model_copy(update={"elk": elk})
        update["monitoring"] = spec.monitoring.model_copy(update={"logging": logging})
    return Target(spec=spec.model_copy(update=update), host=host, root=ct.root, python=ct.python)


def prometheus_config(text: str, spec: Spec) -> str:
    """The rendered prometheus.yml with its targets on the monitoring network: the engine through
    nginx's plain-HTTP port, node-exporter, and Alertmanager by service name."""
    config = yaml.safe_load(text)
    addresses = {
        "engine": f"{NGINX_ALIAS}:{spec.deploy.ports.http}",
        "node": f"node-exporter:{NODE_EXPORTER_PORT}",
    }
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [addresses[job["job_name"]]]
    for manager in config.get("alerting", {}).get("alertmanagers", []):
        for group in manager["static_configs"]:
            group["targets"] = [f"alertmanager:{spec.monitoring.alertmanager.port}"]
    return dump_yaml(config)


def grafana_datasources(text: str, spec: Spec) -> str:
    """The rendered datasource file with Prometheus by service name."""
    provisioning = yaml.safe_load(text)
    for source in provisioning["datasources"]:
        source["url"] = f"http://prometheus:{spec.monitoring.prometheus.port}"
    return dump_yaml(provisioning)
