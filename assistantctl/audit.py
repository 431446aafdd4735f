"""The append-only audit log: every plan, apply, rollback and unlock, on the controller and hosts.

One JSON object per line: time, actor, action, target hosts, impact (the plan summary), result,
and the sha256 of the spec it came from. The controller's log sits next to the spec
(`.assistantctl/audit.log`); each host's is `<root>/logs/audit.log`, written through host_actions.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from .remote import HostUnreachable, host_action
from .renderers import Target

CONTROLLER_LOG = Path(".assistantctl") / "audit.log"


def actor() -> str:
    """Who acts: $ASSISTANT_ACTOR when a pipeline sets it (e.g. the merge author), else user@machine."""
    return os.environ.get("ASSISTANT_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def make_entry(action: str, spec_path: Path, hosts: list[str], impact: dict, result: str, **extra: object) -> dict:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "actor": actor(),
        "action": action,
        "hosts": hosts,
        "impact": impact,
        "result": result,
        "spec_sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest() if spec_path.exists() else None,
        **extra,
    }


def record(entry: dict, spec_path: Path, targets: list[Target] = ()) -> list[str]:
    """Append `entry` on the controller and on each target host; returns the hosts it could not reach."""
    log = spec_path.parent / CONTROLLER_LOG
    log.parent.mkdir(exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)
    missed = []
    for target in targets:
        try:
            host_action(target, "audit", entry=entry)
        except (HostUnreachable, OSError):
            missed.append(target.host.name)
    return missed
