"""The engine on a Kubernetes cluster: plain manifests plus a `kustomization.yaml`, rendered once
(for the first host) and never applied by assistantctl: `kubectl apply -k <dir>` (docs/kubernetes.md).

What runs in the cluster is the engine alone: the Ingress controller stands in for nginx, the
HorizontalPodAutoscaler for the host list, and PostgreSQL and Redis stay outside (the spec's
`kubernetes.postgres` / `kubernetes.redis` become Services pointing at them). The engine's
settings file is built for a pod (the same `build_settings` the hosts get, listening on 0.0.0.0,
paths under `/srv/assistant`) and carried by a ConfigMap. Secret values never appear: the pod
mounts the needed keys of one existing Secret, and an init container turns them into the
`secrets.json` the engine reads, in a memory-backed volume. Every object is a Python dict written
by one YAML dumper, so no spec string can add a key, an object or a document.
"""

from __future__ import annotations

import yaml

from ..base import Files, Renderer, Target
from .names import namespace
from .network import external_service, ingress, network_policy
from .workload import autoscaler, code_config_map, config_map, deployment, disruption_budget, service, settings_json

_HEADER = "# Rendered by assistantctl from assistant.yaml; edit the spec, not this file.\n"


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings (the settings JSON) as literal blocks, so the
    ConfigMap reads like the file; PyYAML falls back to a quoted scalar when a block cannot hold one."""


# Line breaks to YAML that Python's splitlines and a compiler do not all agree on: a block scalar
# holding one would not read back as the same text.
_OTHER_BREAKS = ("\x85", "\u2028", "\u2029")


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    block = "\n" in value and not any(mark in value for mark in _OTHER_BREAKS)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if block else None)


_Dumper.add_representer(str, _text)


def dump_yaml(data: object) -> str:
    """The manifests' one writer: safe types only, sorted keys, no folding."""
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True, width=100_000)
    return _HEADER + text


def manifests(target: Target) -> dict[str, dict]:
    """{file name: object}, one object per file so `overrides/kubernetes/<file>` merges into one."""
    spec = target.spec
    settings = settings_json(target)
    objects = {
        "namespace.yaml": {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace(spec), "labels": {"app.kubernetes.io/managed-by": "assistantctl"}},
        },
        "configmap.yaml": config_map(target, settings),
        "deployment.yaml": deployment(target, settings),
        "service.yaml": service(spec),
        "hpa.yaml": autoscaler(spec),
        "pdb.yaml": disruption_budget(spec),
        "networkpolicy.yaml": network_policy(spec),
    }
    if code := code_config_map(target):
        objects["code.yaml"] = code
    if spec.kubernetes.ingress.enabled:
        objects["ingress.yaml"] = ingress(spec)
    for kind in ("postgres", "redis"):
        external = getattr(spec.kubernetes, kind)
        for obj in external_service(spec, kind, external) if external else []:
            suffix = "endpointslice" if obj["kind"] == "EndpointSlice" else "service"
            objects[f"{kind}-{suffix}.yaml"] = obj
    return objects


def render(target: Target) -> Files:
    objects = manifests(target)
    # Kustomize applies the Namespace first and names every file, so `kubectl apply -k` takes the folder.
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["namespace.yaml", *sorted(name for name in objects if name != "namespace.yaml")],
    }
    files = {name: dump_yaml(obj) for name, obj in objects.items()}
    files["kustomization.yaml"] = dump_yaml(kustomization)
    return dict(sorted(files.items()))


# Not shipped: apply deploys hosts, never a cluster. The check validates every object against
# the Kubernetes API's own JSON schemas, offline (assistantctl/kubernetes_check.py).
RENDERER = Renderer(
    name="kubernetes",
    service="kubernetes",
    render=render,
    applies=lambda t: t.host.name == t.spec.deploy.hosts[0].name,
    check="{python} -m assistantctl.kubernetes_check {dir}",
    shipped=False,
)
