"""`kubernetes:` how the engine runs on a Kubernetes cluster (`render` writes the manifests; apply
never touches a cluster)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from ..types import HostName, IPNetwork, Port, ServerName
from .base import Strict

# A DNS-1123 label: what Kubernetes accepts for namespaces, Secret and IngressClass names.
KubeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
# An image reference: registry/repository[:tag][@digest]; no spaces, quotes or newlines.
ImageRef = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][A-Za-z0-9._/:@+-]{0,254}$")]


class ExternalService(Strict):
    address: HostName = Field(
        description="DNS name (an ExternalName Service) or IP address (a Service with an EndpointSlice)."
    )
    port: Port = Field(description="TCP port the engine's pods may reach it on (NetworkPolicy egress).")


class KubeResources(Strict):
    cpu_request_millicores: int | None = Field(
        None, ge=10, le=256000, description="CPU request per pod (the HPA's 100 %); unset: 500 per engine worker."
    )
    cpu_limit_millicores: int | None = Field(
        None, ge=10, le=256000, description="CPU limit per pod; unset: 1000 per engine worker."
    )
    memory_mb: int | None = Field(
        None, ge=64, le=1048576, description="Memory request and limit per pod (MiB); unset: 256 + 256 per worker."
    )

    @model_validator(mode="after")
    def _request_within_limit(self) -> KubeResources:
        request, limit = self.cpu_request_millicores, self.cpu_limit_millicores
        if request is not None and limit is not None and request > limit:
            raise ValueError(f"cpu_request_millicores ({request}) is above cpu_limit_millicores ({limit})")
        return self


class KubeIngress(Strict):
    enabled: bool = Field(True, description="Render an Ingress in front of the engine's Service.")
    class_name: KubeName | None = Field(None, description="ingressClassName; unset: the cluster's default class.")
    host: ServerName | None = Field(
        None, description="Host the Ingress answers; unset: deploy.server_name (none when it ends in `.*`)."
    )
    tls_secret: KubeName | None = Field(
        None,
        description="An existing kubernetes.io/tls Secret for the host; unset: <namespace>-tls when "
        "security.tls.enabled, else plain HTTP at the Ingress.",
    )
    controller_namespace: KubeName = Field(
        "ingress-nginx", description="Namespace of the ingress controller: the NetworkPolicy admits only it."
    )
    trusted_networks: list[IPNetwork] = Field(
        default_factory=list,
        description="Networks of the ingress controller's pods (the cluster's pod network): the engine "
        "believes their X-Forwarded-For, so per-IP rate limits and logs see each client; unset: every "
        "client has the controller's address.",
    )


class Kubernetes(Strict):
    namespace: KubeName | None = Field(None, description="Namespace of every object; unset: derived from `name`.")
    image: ImageRef | None = Field(
        None, description="The engine's container image; unset: assistantctl/engine:<assistantctl version>."
    )
    min_replicas: int = Field(
        2, ge=1, le=1000, description="HPA minimum; 1 while history is SQLite (one pod's own file)."
    )
    max_replicas: int = Field(10, ge=1, le=1000, description="HPA maximum; 1 while history is SQLite.")
    cpu_target_percent: int = Field(70, ge=1, le=100, description="HPA target: average CPU use of the request.")
    resources: KubeResources = Field(KubeResources(), description="CPU and memory per engine pod.")
    ingress: KubeIngress = Field(KubeIngress(), description="The Ingress (ingress-nginx annotations).")
    secret_name: KubeName | None = Field(
        None,
        description="Existing Secret holding the engine's secrets: key NAME for ${env:NAME}, the file's "
        "name for ${file:...}; unset: <namespace>-secrets. Never rendered with values.",
    )
    postgres: ExternalService | None = Field(None, description="PostgreSQL outside the cluster, for history.")
    redis: ExternalService | None = Field(None, description="Redis outside the cluster, for rate limits.")

    @model_validator(mode="after")
    def _replicas_in_order(self) -> Kubernetes:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self
