"""The places assistantctl has deployed to, so a host removed from the spec is not forgotten.

Every successful apply records its hosts in `.assistantctl/hosts.json` next to the spec (beside the
controller's audit log): how to reach each one and its deploy root. A place is where a deployment
lives, (connection, address, root), not a name: renaming a host in the spec moves nothing, while
changing its address or root leaves the old place behind. A recorded place that no host of the
spec targets any more has *left the spec*: `plan` lists it and `assistantctl retire NAME` removes
what assistantctl put there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .renderers import Target
from .schema.spec import Host, Spec

RECORD = Path(".assistantctl") / "hosts.json"
# What the record keeps of a host: enough to reach it again, and nothing secret.
_REACH = ("name", "address", "connection", "ssh_user", "ssh_port", "ssh_config", "python")


@dataclass(frozen=True)
class Departed:
    """A place assistantctl deployed to that the spec no longer names."""

    name: str
    root: str
    host: dict  # the Host fields of _REACH, as they were at its last apply

    def target(self, spec: Spec) -> Target:
        """A target to reach it with: its own connection and root, the current spec's timeouts."""
        host = Host.model_validate({k: v for k, v in self.host.items() if v is not None})
        return Target(spec=spec, host=host, root=self.root, python=self.host.get("python") or "python3")

    def describe(self) -> str:
        where = "this machine" if self.host.get("connection") == "local" else self.host.get("address")
        return f"{self.name} ({where}, {self.root})"


def _place(connection: str, address: str, root: str) -> str:
    return f"{connection}:{address if connection == 'ssh' else 'local'}:{root}"


def _path(spec_path: Path) -> Path:
    return spec_path.resolve().parent / RECORD


def _read(spec_path: Path) -> dict[str, dict]:
    try:
        return json.loads(_path(spec_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{_path(spec_path)}: not JSON ({exc}); fix or remove it") from None


def _write(spec_path: Path, record: dict[str, dict]) -> None:
    path = _path(spec_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def target_place(target: Target) -> str:
    return _place(target.host.connection, target.host.address, target.root)


def remember(spec_path: Path, targets: list[Target]) -> None:
    """Record `targets` as places assistantctl has deployed to (after their apply succeeded)."""
    if not targets:
        return
    record = _read(spec_path)
    for target in targets:
        reach = {field: getattr(target.host, field) for field in _REACH}
        reach["python"] = target.python if target.host.connection == "ssh" and target.host.python else None
        record[target_place(target)] = {"name": target.host.name, "root": target.root, "host": reach}
    _write(spec_path, record)


def departed(spec_path: Path, current: list[Target]) -> list[Departed]:
    """Recorded places that none of `current` (every host of the spec) targets, by name."""
    live = {target_place(t) for t in current}
    found = [
        Departed(entry["name"], entry["root"], entry["host"])
        for place, entry in _read(spec_path).items()
        if place not in live
    ]
    return sorted(found, key=lambda d: (d.name, d.root))


def forget(spec_path: Path, gone: Departed) -> None:
    record = _read(spec_path)
    record.pop(_place(gone.host.get("connection", "local"), gone.host.get("address", ""), gone.root), None)
    _write(spec_path, record)
