"""Compare what a host should run (the bundle) with what it runs (its facts), file by file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from .bundle import Bundle
from .renderers import Target

Action = Literal["add", "change", "remove"]


@dataclass(frozen=True)
class FileChange:
    action: Action
    path: str
    service: str
    sensitive: bool = False
    drift: bool = False  # the live file no longer matches the live manifest: edited by hand


@dataclass(frozen=True)
class HostPlan:
    target: Target
    bundle: Bundle
    live_release: str | None
    live_bundle_id: str | None
    changes: tuple[FileChange, ...]
    start_services: bool  # nothing supervises the release: apply must start it
    live_content: dict[str, str | None] = field(default_factory=dict)
    live_digest: str = ""  # what the host ran when planned; a saved plan refuses a host that moved since
    lock: dict | None = None
    install_runtime: bool = False  # the engine's virtualenv for this version is not on the host yet
    host_python: dict = field(default_factory=dict)  # the host's python3: what its wheels must fit

    @property
    def host(self) -> str:
        return self.target.host.name

    @property
    def has_changes(self) -> bool:
        return bool(self.changes) or self.start_services or self.install_runtime

    @property
    def changed_services(self) -> list[str]:
        return sorted({c.service for c in self.changes})

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action == action)


def plan_host(target: Target, bundle: Bundle, facts: dict) -> HostPlan:
    desired = bundle.entries()
    live_manifest = facts.get("manifest") or {}
    live = live_manifest.get("files", {})
    actual = facts.get("actual", {})
    changes: list[FileChange] = []
    for path, entry in desired.items():
        was = live.get(path)
        if was is None:
            changes.append(FileChange("add", path, entry["service"], entry["sensitive"]))
        elif (was["sha256"], was["mode"]) != (entry["sha256"], entry["mode"]):
            changes.append(FileChange("change", path, entry["service"], entry["sensitive"]))
        elif actual.get(path) != was["sha256"]:
            changes.append(FileChange("change", path, entry["service"], entry["sensitive"], drift=True))
    for path, was in live.items():
        if path not in desired:
            changes.append(FileChange("remove", path, was["service"], was.get("sensitive", False)))
    return HostPlan(
        target=target,
        bundle=bundle,
        live_release=facts.get("release"),
        live_bundle_id=live_manifest.get("bundle_id"),
        changes=tuple(sorted(changes, key=lambda c: c.path)),
        start_services=not facts.get("supervisord_running", False),
        live_content=facts.get("content", {}),
        live_digest=live_digest(facts),
        lock=facts.get("lock"),
        install_runtime=target.runtime is not None and target.runtime not in facts.get("runtimes", ()),
        host_python=facts.get("python", {}),
    )


def live_digest(facts: dict) -> str:
    """A hash of what is live on a host: its release, manifest and the real hashes of its files."""
    state = {key: facts.get(key) for key in ("release", "manifest", "actual")}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
