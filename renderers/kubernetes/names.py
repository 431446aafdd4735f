"""Names, labels and paths every Kubernetes object of the engine shares."""

from __future__ import annotations

import re
from importlib.metadata import version

from ...schema.spec import Spec
from ..base import Target

ROOT = "/srv/assistant"  # the deploy root inside the pod, as in the compose target
SETTINGS_DIR = f"{ROOT}/current/engine"
SECRETS_DIR = "/run/assistant/secrets"  # memory-backed: the assembled secrets.json
SECRET_REFS_DIR = "/run/assistant/secret-refs"  # the Secret's keys, one file per spec location
DEFAULT_IMAGE = f"assistantctl/engine:{version('assistantctl')}"
UID = 10001  # any non-root uid works: the image's files only need to be world-readable


def base_name(spec: Spec) -> str:
    """`name` as a DNS-1123 label short enough for every object name derived from it."""
    return re.sub(r"[^a-z0-9-]+", "-", spec.name)[:40].strip("-") or "assistant"


def namespace(spec: Spec) -> str:
    return spec.kubernetes.namespace or base_name(spec)


def secret_name(spec: Spec) -> str:
    return spec.kubernetes.secret_name or f"{namespace(spec)}-secrets"


def single_replica(spec: Spec) -> bool:
    """SQLite history is one file per pod: more than one pod would split every conversation."""
    return spec.deploy.state.history == "sqlite"


def pod_target(target: Target) -> Target:
    """The spec as one engine-only node under ROOT (listening beyond loopback, like an engine host)."""
    spec = target.spec
    host = spec.deploy.hosts[0].model_copy(update={"connection": "local", "roles": ["engine"]})
    pod_spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"hosts": [host], "ha": None})})
    return Target(spec=pod_spec, host=host, root=ROOT, python="python")


def labels(spec: Spec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "assistant-engine", "app.kubernetes.io/instance": base_name(spec)}


def meta(spec: Spec, name: str, **extra: object) -> dict:
    tagged = {**labels(spec), "app.kubernetes.io/managed-by": "assistantctl"}
    return {"name": name, "namespace": namespace(spec), "labels": tagged, **extra}


def engine_name(spec: Spec) -> str:
    return f"{base_name(spec)}-engine"
