"""The engine's workload: Deployment (probes, hardened pod, secrets assembled by an init
container), HorizontalPodAutoscaler, PodDisruptionBudget, Service, the settings ConfigMap and the
code ConfigMap (skill folders, custom adapters' modules)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from posixpath import basename

from ...schema.secrets import secret_refs
from ...schema.skill_folders import files_digest
from ...schema.spec import Spec
from ...schema.types import SECRET_REF
from .. import adapters, engine, skills
from ..base import Target
from ..supervisor import ENGINE_STOP_GRACE_SECONDS
from .names import (
    DEFAULT_IMAGE,
    ROOT,
    SECRET_REFS_DIR,
    SECRETS_DIR,
    SETTINGS_DIR,
    UID,
    engine_name,
    labels,
    meta,
    pod_target,
    secret_name,
    single_replica,
)

_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
# Runs in the engine's image before the engine: one JSON object of every mounted key, mode 0600,
# values stripped like `${file:...}` values are at apply time (a Secret made --from-file keeps the newline).
_ASSEMBLE = (
    "import json, os, pathlib, sys\n"
    "src, out = pathlib.Path(sys.argv[1]), sys.argv[2]\n"
    "values = {p.name: p.read_text(encoding='utf-8').strip() for p in sorted(src.iterdir())"
    " if not p.name.startswith('..')}\n"
    "fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
    "with os.fdopen(fd, 'w', encoding='utf-8') as f:\n"
    "    json.dump(values, f)\n"
)


def settings_json(target: Target) -> str:
    """The engine's settings for a pod. No edge guard: the pod's peer is the Ingress controller,
    whose addresses are not known here; the NetworkPolicy admits only its namespace instead. Its
    X-Forwarded-For is believed from `kubernetes.ingress.trusted_networks`."""
    settings = engine.build_settings(pod_target(target))
    proxies = [str(network) for network in target.spec.kubernetes.ingress.trusted_networks]
    edgeless = {"edge_addresses": [], "edge_secret": None, "trusted_proxies": proxies}
    security = settings.security.model_copy(update=edgeless)
    update = {"security": security}
    # The engine-only secret of hosts (the edge secret) is the one secret a pod may have no key for.
    update["secrets_file"] = f"{SECRETS_DIR}/{engine.SECRETS_FILE}" if secret_keys(target) else None
    return settings.model_copy(update=update).to_json()


def secret_keys(target: Target) -> dict[str, str]:
    """{spec location: key in the Secret} for every secret the engine's settings name.

    `${env:NAME}` is key NAME; `${file:/p/name}` is key `name` (what `kubectl create secret
    generic --from-file=/p/name` makes). A name Kubernetes refuses as a key, or one key claimed by
    two different references, falls back to the spec location itself.
    """
    pt = pod_target(target)
    refs = secret_refs(pt.spec)
    needed = engine.secret_files(pt, dict.fromkeys(refs, ""))
    names = sorted(json.loads(needed[engine.SECRETS_FILE])) if needed else []
    names = [name for name in names if name != "security.edge_secret"]
    wanted = {name: _key_of(refs[name]) for name in names}
    claims: dict[str, set[str]] = {}
    for name, key in wanted.items():
        claims.setdefault(key, set()).add(refs[name])
    fallback = {name: re.sub(r"[^-._a-zA-Z0-9]", "_", name) for name in names}
    return {
        name: key if len(claims[key]) == 1 and _SECRET_KEY.match(key) else fallback[name]
        for name, key in wanted.items()
    }


def _key_of(ref: str) -> str:
    kind, value = SECRET_REF.match(ref).groups()
    return value if kind == "env" else basename(value)


def _resources(spec: Spec) -> dict:
    workers = spec.limits.concurrency.workers
    chosen = spec.kubernetes.resources
    memory = f"{chosen.memory_mb or 256 + 256 * workers}Mi"
    request = chosen.cpu_request_millicores or 500 * workers
    # The API server refuses a request above the limit: a derived limit never falls below the request.
    limit = chosen.cpu_limit_millicores or max(1000 * workers, request)
    return {
        "requests": {"cpu": f"{request}m", "memory": memory},
        "limits": {"cpu": f"{limit}m", "memory": memory},
    }


def _probe(path: str, port: int, period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _hardened() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _secret_parts(target: Target) -> tuple[list[dict], list[dict], list[dict]]:
    """(init containers, volumes, engine mounts) that turn the Secret's keys into secrets.json."""
    keys = secret_keys(target)
    if not keys:
        return [], [], []
    spec = target.spec
    init = {
        "name": "secrets",
        "image": spec.kubernetes.image or DEFAULT_IMAGE,
        "command": ["python", "-c", _ASSEMBLE, SECRET_REFS_DIR, f"{SECRETS_DIR}/{engine.SECRETS_FILE}"],
        "volumeMounts": [
            {"name": "secret-refs", "mountPath": SECRET_REFS_DIR, "readOnly": True},
            {"name": "secrets", "mountPath": SECRETS_DIR},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        "securityContext": _hardened(),
    }
    items = [{"key": key, "path": name} for name, key in sorted(keys.items())]
    # 0440: the kubelet gives the files to the pod's fsGroup, which the engine's uid is in.
    volumes = [
        {"name": "secret-refs", "secret": {"secretName": secret_name(spec), "items": items, "defaultMode": 0o440}},
        {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    return [init], volumes, [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}]


def deployment(target: Target, settings: str) -> dict:
    """The engine's Deployment; `settings` is `settings_json(target)` (its digest rolls the pods)."""
    spec = target.spec
    port = spec.deploy.ports.engine
    init, secret_volumes, secret_mounts = _secret_parts(target)
    code_volumes, code_mounts = _code_parts(target)
    container = {
        "name": "engine",
        "image": spec.kubernetes.image or DEFAULT_IMAGE,
        "command": ["python", "-m", "assistantctl.engine", "--settings", f"{SETTINGS_DIR}/settings.json"],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Ready: answers traffic (its workers run); alive: the parent process answers at all.
        "readinessProbe": _probe("/ready", port, 5, 3),
        "livenessProbe": _probe("/health", port, 10, 3),
        "startupProbe": _probe("/health", port, 2, 30),
        "resources": _resources(spec),
        "securityContext": _hardened(),
        "volumeMounts": [
            {"name": "settings", "mountPath": SETTINGS_DIR, "readOnly": True},
            {"name": "data", "mountPath": f"{ROOT}/data"},
            {"name": "logs", "mountPath": f"{ROOT}/logs"},
            {"name": "workspaces", "mountPath": f"{ROOT}/workspaces"},
            {"name": "tmp", "mountPath": "/tmp"},
            *code_mounts,
            *secret_mounts,
        ],
    }
    pod = {
        "serviceAccountName": "default",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # A request in flight may finish, then the engine's own drain, before SIGKILL.
        "terminationGracePeriodSeconds": math.ceil(spec.limits.timeouts.request_seconds) + ENGINE_STOP_GRACE_SECONDS,
        "containers": [container],
        "volumes": [
            {"name": "settings", "configMap": {"name": f"{engine_name(spec)}-settings"}},
            {"name": "data", "emptyDir": {}},
            {"name": "logs", "emptyDir": {}},
            {"name": "workspaces", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            *code_volumes,
            *secret_volumes,
        ],
    }
    if init:
        pod["initContainers"] = init
    # A settings change changes the pod template, so the Deployment rolls its pods.
    checksum = {"assistantctl/settings-sha256": hashlib.sha256(settings.encode()).hexdigest()}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(spec, engine_name(spec)),
        "spec": {
            "replicas": _replicas(spec)[0],
            "selector": {"matchLabels": labels(spec)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(spec), "annotations": checksum}, "spec": pod},
        },
    }


def _replicas(spec: Spec) -> tuple[int, int]:
    if single_replica(spec):
        return 1, 1
    return spec.kubernetes.min_replicas, spec.kubernetes.max_replicas


def autoscaler(spec: Spec) -> dict:
    low, high = _replicas(spec)
    target = {"type": "Utilization", "averageUtilization": spec.kubernetes.cpu_target_percent}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(spec, engine_name(spec)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": engine_name(spec)},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
        },
    }


def disruption_budget(spec: Spec) -> dict:
    # One pod at a time, whatever the replica count: a drain never takes the whole engine away
    # while more than one pod runs, and never blocks forever when only one does.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(spec, engine_name(spec)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(spec)}},
    }


def service(spec: Spec) -> dict:
    port = spec.deploy.ports.engine
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(spec, engine_name(spec)),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(spec),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# The code the settings name: each renderer's files a volume of the code ConfigMap, mounted where
# a host's release has them (`current/skills`, `current/adapters`).
CODE_RENDERERS = (skills, adapters)


def code_files(target: Target) -> dict[str, dict[str, str]]:
    """{folder under current/: {path inside it: text}} of the skill folders and custom adapters."""
    found = {module.RENDERER.name: module.render(target) for module in CODE_RENDERERS}
    return {folder: files for folder, files in found.items() if files}


def _code_keys(files: dict[str, dict[str, str]]) -> dict[tuple[str, str], str]:
    """{(folder, path): ConfigMap key}. Keys may not hold '/', so each is its file's number and name."""
    paths = [(folder, path) for folder, inside in files.items() for path in inside]
    return {
        where: f"{n:04d}-{re.sub(r'[^-._a-zA-Z0-9]', '_', basename(where[1]))[:200]}" for n, where in enumerate(paths)
    }


def _code_name(spec: Spec, files: dict[str, dict[str, str]]) -> str:
    """Named after its content: pods of an older template keep the code they were made with."""
    paired = ((f"{folder}/{path}", text) for folder, inside in files.items() for path, text in inside.items())
    return f"{engine_name(spec)}-code-{files_digest(paired)[:10]}"


def code_config_map(target: Target) -> dict | None:
    """The ConfigMap of code files (None without any): the pods get what a host's release holds.
    Immutable and named after its content, so a rolling update or a rollback never mixes code."""
    files = code_files(target)
    if not files:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(target.spec, _code_name(target.spec, files)),
        "immutable": True,
        "data": {key: files[folder][path] for (folder, path), key in _code_keys(files).items()},
    }


def _code_parts(target: Target) -> tuple[list[dict], list[dict]]:
    """(volumes, engine mounts) laying the code ConfigMap out as a host's release holds the files."""
    files = code_files(target)
    keys, name, volumes, mounts = _code_keys(files), _code_name(target.spec, files), [], []
    for folder in files:
        items = [{"key": key, "path": path} for (where, path), key in keys.items() if where == folder]
        source = {"name": name, "items": items}
        volumes.append({"name": f"code-{folder}", "configMap": source})
        mounts.append({"name": f"code-{folder}", "mountPath": f"{ROOT}/current/{folder}", "readOnly": True})
    return volumes, mounts


def config_map(target: Target, settings: str) -> dict:
    spec = target.spec
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(spec, f"{engine_name(spec)}-settings"),
        "data": {"settings.json": settings},
    }
