"""Compare what a host should run (the bundle) with what it runs (its facts): file by file, and its
running state (programs, listening sockets, the engine's settings) against its live release."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Literal

from .bundle import Bundle
from .renderers import Target

Action = Literal["add", "change", "remove"]
ENGINE_PROGRAM = "supervisor/programs/engine.conf"
# How apply repairs a running-state drift (playbooks/tasks/repair.yml): `supervisorctl update` for
# programs supervisord and the release disagree on, start a stopped one, restart one stuck in
# BACKOFF, reload (services.yml's reload command) one that runs but not what its release says.
Fix = Literal["update", "start", "restart", "reload"]
_STARTING = "STARTING"  # on its way up (an apply, supervisord's own respawn): not drift yet
# Programs that open their configured sockets again on a reload; the others (the engine's parent
# keeps its listening socket across a SIGHUP) listen elsewhere only after a restart.
_REBINDS = frozenset({"nginx"})


@dataclass(frozen=True)
class FileChange:
    action: Action
    path: str
    service: str
    sensitive: bool = False
    drift: bool = False  # the live file no longer matches the live manifest: edited by hand


@dataclass(frozen=True)
class ServiceDrift:
    """The host does not run what its live release says: `problem` for people, `fix` for apply."""

    service: str
    problem: str
    fix: Fix


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
    running_drift: tuple[ServiceDrift, ...] = ()  # what runs differs from the live release: apply repairs

    @property
    def host(self) -> str:
        return self.target.host.name

    @property
    def has_changes(self) -> bool:
        return bool(self.changes) or self.start_services or self.install_runtime or bool(self.running_drift)

    @property
    def changed_services(self) -> list[str]:
        return sorted({c.service for c in self.changes})

    @property
    def engine_restart(self) -> str | None:
        """Why this apply restarts the running engine instead of reloading it, or None.

        Settings changes reload or roll the workers without a failed request (engine/workers.py);
        a changed supervisor program (a new runtime virtualenv, another command) is restarted by
        `supervisorctl update`, so the requests in flight at that moment may fail.
        """
        for change in self.changes:
            if change.path == ENGINE_PROGRAM and change.action == "change" and self.live_release:
                return "its supervisor program changed (a new runtime or command)"
        return None

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
        running_drift=running_drift(facts),
    )


def live_digest(facts: dict) -> str:
    """A hash of what is live on a host: its release, manifest, the real hashes of its files and its
    running-state drift (what apply would repair; not pids or timings, which move on their own)."""
    state = {key: facts.get(key) for key in ("release", "manifest", "actual")}
    state["running_drift"] = [[d.service, d.problem, d.fix] for d in running_drift(facts)]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def running_drift(facts: dict) -> tuple[ServiceDrift, ...]:
    """Where the running state differs from the live release. Nothing when supervisord is not
    running at all (`start_services` covers that) or does not answer (nothing to compare)."""
    running = facts.get("running") or {}
    states = running.get("programs")
    if not facts.get("supervisord_running") or states is None:
        return ()
    expected = running.get("expected_programs", [])
    found = [
        ServiceDrift(name, f"{name} {state.lower()}, the live release has no such program", "update")
        for name, state in sorted(states.items())
        if name not in expected
    ]
    for name in expected:
        state = states.get(name)
        if state is None:
            found.append(ServiceDrift(name, f"{name} unknown to supervisord, the release runs it", "update"))
        elif state not in ("RUNNING", _STARTING):
            found.append(ServiceDrift(name, f"{name} {state.lower()}, the release runs it", _state_fix(state)))
    found.extend(_socket_drift(running.get("sockets", []), states))
    found.extend(_settings_drift(facts, states))
    return tuple(found)


def _state_fix(state: str | None) -> Fix:
    """How a program that does not run comes back: added by `update`, restarted out of BACKOFF
    (supervisord refuses to start what it still retries), or started."""
    return "update" if state is None else "restart" if state == "BACKOFF" else "start"


def _socket_drift(sockets: list[dict], states: dict[str, str]) -> list[ServiceDrift]:
    found = []
    for sock in sockets:
        program, address, port, listening = sock["program"], sock["address"], sock["port"], sock["listening"]
        if states.get(program) == _STARTING or _listens(address, listening):
            continue
        state = states.get(program)
        fix = _state_fix(state) if state != "RUNNING" else "reload" if program in _REBINDS else "restart"
        if not listening:
            found.append(ServiceDrift(program, f"port {port} not listening ({program})", fix))
        else:
            where = ", ".join(f"{a}:{port}" for a in listening)
            found.append(ServiceDrift(program, f"port {port}: listening on {where}, the release has {address}", fix))
    return found


def _listens(address: str, listening: list[str]) -> bool:
    """An address the release names is served by that address, or by a wildcard covering it."""
    try:
        ipaddress.ip_address(address)
    except ValueError:  # a host name in nginx's `listen`: any socket on the port will do
        return bool(listening)
    return address in listening or (address == "0.0.0.0" and "::" in listening)


def _settings_drift(facts: dict, states: dict[str, str]) -> list[ServiceDrift]:
    """The engine's config generation: the settings its workers loaded (GET /health from loopback
    carries the sha256 of the answering worker's and of what its parent says all of them run; an
    engine without them is not judged) against the live manifest's."""
    health = (facts.get("running") or {}).get("health", {}).get("engine") or {}
    loaded = {health.get(key) for key in ("settings_sha256", "workers_settings_sha256")} - {None}
    live = ((facts.get("manifest") or {}).get("files", {}).get("engine/settings.json") or {}).get("sha256")
    if not loaded or not live or loaded == {live} or states.get("engine") != "RUNNING":
        return []
    return [ServiceDrift("engine", "engine runs other settings than the live release", "reload")]
