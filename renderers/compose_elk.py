"""The ELK services of the compose file, behind the `elk` profile, on the `logging` network
(compose_networks.py): Filebeat ships the `logs` volume's files to the service `logstash`, and a
compose-local Elasticsearch (the service `elasticsearch`) runs only when the spec's Elasticsearch
is the loopback one, so Logstash and Kibana always use the same cluster."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from . import compose_networks as nets
from . import elk
from .base import Target
from .compose_parts import IMAGES, ROOT, config_binds, current, healthy, service


def _elk_common() -> dict:
    # Fresh lists per service: a shared object would come out as a YAML anchor and alias.
    return {"networks": [nets.LOGGING], "profiles": ["elk"]}


def local_elasticsearch(ct: Target) -> bool:
    """The spec's Elasticsearch is this machine's (the default): then the stack runs one."""
    hosts = ct.spec.monitoring.logging.elk.elasticsearch_hosts
    return all(urlsplit(str(url)).hostname in ("127.0.0.1", "localhost", "::1") for url in hosts)


def logging_target(ct: Target) -> Target:
    return nets.logging_target(ct, local_elasticsearch(ct))


def elk_services(ct: Target) -> dict[str, dict]:
    if not elk.RENDERER.applies(ct):
        return {}
    local = local_elasticsearch(ct)
    # Kibana reads the cluster Logstash writes to: the compose-local one, or the spec's own.
    logging = logging_target(ct)
    hosts = [str(url).rstrip("/") for url in logging.spec.monitoring.logging.elk.elasticsearch_hosts]
    services = {
        "elasticsearch": service(
            IMAGES["elasticsearch"],
            # Single-node development mode (no bootstrap checks), on its own namespace's addresses:
            # reachable from the logging network only.
            environment={
                "discovery.type": "single-node",
                "network.host": "0.0.0.0",
                "xpack.security.enabled": "false",
                "ES_JAVA_OPTS": "-Xms512m -Xmx512m",
            },
            volumes=["elasticsearch-data:/usr/share/elasticsearch/data"],
            # The image ships curl; yellow is healthy for a single node (replicas stay unassigned).
            healthcheck={
                "test": [
                    "CMD",
                    "curl",
                    "-fsS",
                    "http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=2s",
                ],
                "interval": "10s",
                "timeout": "5s",
                "retries": 12,
                "start_period": "30s",
            },
            mem_limit="1g",
            **_elk_common(),
        ),
        "logstash": service(
            IMAGES["logstash"],
            command=["logstash", "-f", current("elk", elk.PIPELINE_FILE)],
            environment={"XPACK_MONITORING_ENABLED": "false", "LS_JAVA_OPTS": "-Xms256m -Xmx256m"},
            volumes=config_binds(ct, elk, only=("logstash/",)),
            depends_on=healthy("elasticsearch") if local else None,
            **_elk_common(),
        ),
        "kibana": service(
            IMAGES["kibana"],
            # Kibana's image reads a YAML list from this variable.
            environment={"ELASTICSEARCH_HOSTS": json.dumps(hosts), "SERVER_HOST": "127.0.0.1"},
            volumes=config_binds(ct, elk, only=("kibana/",)),
            depends_on=healthy("elasticsearch") if local else None,
            **_elk_common(),
        ),
        "filebeat": service(
            IMAGES["filebeat"],
            # root: the logs volume belongs to the writers; -e logs to stderr (docker logs).
            user="root",
            command=["filebeat", "-e", "--strict.perms=false", "-c", current("elk", "filebeat.yml")],
            volumes=[
                f"logs:{ROOT}/logs:ro",
                f"filebeat-data:{ROOT}/data/filebeat",
                *config_binds(ct, elk, only=("filebeat.yml",)),
            ],
            depends_on=["logstash"],
            **_elk_common(),
        ),
    }
    if not local:
        del services["elasticsearch"]
    return services
