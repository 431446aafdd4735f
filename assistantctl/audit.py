"""The append-only, hash-chained audit log: every run of plan, apply, rollback, unlock, backup,
restore and keys, on the controller and on the hosts it changed.

One JSON object per line: time, actor, action, target hosts, impact (the plan summary), result, the
sha256 of the spec it came from, and the chain fields (seq, prev, hash: see host_actions.py). The
controller's log sits next to the spec (`.assistantctl/audit.log`); each host's is
`<root>/logs/audit.log`, written through host_actions. The two logs anchor each other: a host's
entry carries the controller log's head ({seq, hash}) and the controller's entry each host's new
head, so `audit verify` also notices a tail cut off one of them (as long as the other is intact).

A run that changes hosts writes a "started" entry first (with its pid) and its result at the end;
any later run that finds a "started" entry of a dead process without its end logs that run as
"interrupted" (a SIGKILL, a lost machine). The chain is tamper-evident, not tamper-proof: whoever
can rewrite both the controller's and every host's log, recomputing every hash, goes unnoticed.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from .host_actions import append_chained, verify_chain
from .remote import HostUnreachable, host_action
from .renderers import Target

CONTROLLER_LOG = Path(".assistantctl") / "audit.log"

# Who triggered a pipeline run, by CI system, in the order they are tried.
CI_ACTOR_VARIABLES = (
    "GITHUB_ACTOR",  # GitHub Actions
    "GITLAB_USER_LOGIN",  # GitLab CI
    "BUILD_USER_ID",  # Jenkins (build-user-vars plugin)
    "BUILD_USER",
    "BUILDKITE_BUILD_CREATOR_EMAIL",
    "CIRCLE_USERNAME",
    "BITBUCKET_STEP_TRIGGERER_UUID",
    "BUILD_REQUESTEDFOREMAIL",  # Azure Pipelines
)


def actor(spec_dir: Path | None = None) -> str:
    """Who acts: $ASSISTANT_ACTOR, else the CI system's user, else git's user.email in the spec's
    repository, else user@machine."""
    for variable in ("ASSISTANT_ACTOR", *CI_ACTOR_VARIABLES):
        if os.environ.get(variable):
            return os.environ[variable]
    email = _git_email(spec_dir or Path.cwd())
    return email or f"{getpass.getuser()}@{socket.gethostname()}"


def _git_email(folder: Path) -> str | None:
    try:
        found = subprocess.run(
            ["git", "-C", str(folder), "config", "user.email"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def make_entry(action: str, spec_path: Path, hosts: list[str], impact: dict, result: str, **extra: object) -> dict:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "actor": actor(spec_path.resolve().parent),
        "action": action,
        "hosts": hosts,
        "impact": impact,
        "result": result,
        "spec_sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest() if spec_path.exists() else None,
        **extra,
    }


def controller_log(spec_path: Path) -> Path:
    return spec_path.resolve().parent / CONTROLLER_LOG


def controller_id(spec_path: Path) -> str:
    """Names this controller's log in the anchors hosts keep (several checkouts may deploy one host)."""
    return f"{socket.gethostname()}:{controller_log(spec_path)}"


def start(action: str, spec_path: Path, hosts: list[str], impact: dict) -> str:
    """Log on the controller that a run which changes hosts begins (with its process, so a later run
    can tell it died); returns the run id its result entry must carry (`run=`)."""
    from .locking import this_process

    run = uuid.uuid4().hex
    entry = {**make_entry(action, spec_path, hosts, impact, "started"), "run": run, **this_process()}
    _append_controller([entry], spec_path)
    return run


def failure(exc: BaseException) -> str:
    """The result of a run that ended with `exc` instead of a result."""
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {type(exc).__name__}: {exc}"


def record(entry: dict, spec_path: Path, targets: list[Target] = ()) -> list[str]:
    """Append `entry` on each target host, then on the controller (with the hosts' new heads);
    returns the hosts it could not reach."""
    head = _controller_head(spec_path)
    missed, heads = [], {}
    for target in targets:
        try:
            answer = host_action(target, "audit", entry={**entry, "controller_head": head})
            heads[target.host.name] = answer["head"]
        except (HostUnreachable, OSError):
            missed.append(target.host.name)
    _append_controller([{**entry, "host_heads": heads} if heads else entry], spec_path)
    return missed


def _append_controller(entries: list[dict], spec_path: Path) -> list[dict]:
    log = controller_log(spec_path)
    log.parent.mkdir(exist_ok=True)
    return append_chained(str(log), entries, more=interrupted_runs)


def _controller_head(spec_path: Path) -> dict | None:
    """The controller log's newest line as an anchor for the hosts' logs (None before the chain)."""
    lines = _lines(controller_log(spec_path))
    try:
        seq = json.loads(lines[-1])["seq"] if lines else None
    except (ValueError, KeyError, TypeError):
        seq = None
    if not isinstance(seq, int):
        return None
    return {"log": controller_id(spec_path), "seq": seq, "hash": hashlib.sha256(lines[-1]).hexdigest()}


def interrupted_runs(entries: list[dict]) -> list[dict]:
    """An "interrupted" entry for each run that started on this machine, has no end, and whose
    process is gone. Called under the log's flock, so two runs never both log the same one."""
    from .locking import GONE, liveness

    open_runs: dict[str, dict] = {}
    for entry in entries:
        run = entry.get("run")
        if run and entry.get("result") == "started":
            open_runs[run] = entry
        elif run:
            open_runs.pop(run, None)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kept = ("actor", "action", "hosts", "impact", "spec_sha256", "run", "pid", "controller")
    ended = []
    for e in open_runs.values():
        gone = liveness(e)  # another controller's runs stay open: this one cannot see its processes
        if gone.state == GONE:
            ended.append({**{k: e.get(k) for k in kept}, "time": now, "result": f"interrupted: {gone.reason}"})
            ended[-1]["started_at"] = e.get("time")
    return ended


def _lines(path: Path) -> list[bytes]:
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError:
        return []
    if not lines[-1]:
        lines.pop()
    return lines


def host_anchors(spec_path: Path) -> dict[str, list[dict]]:
    """The newest head each host answered, from the controller's log: {host: [anchor]}."""
    anchors: dict[str, list[dict]] = {}
    for line in _lines(controller_log(spec_path)):
        try:
            heads = json.loads(line).get("host_heads") or {}
        except (ValueError, AttributeError):
            continue
        for host, head in heads.items():
            anchors[host] = [{**head, "source": "the controller's log"}]
    return anchors


def verify_controller(spec_path: Path, host_heads: dict[str, list[dict]]) -> dict:
    """verify_chain of the controller's log, anchored by the controller heads the hosts kept."""
    mine = controller_id(spec_path)
    anchors = [
        {**head, "source": f"host {host}"}
        for host, heads in host_heads.items()
        for head in heads
        if head.get("log") == mine and head.get("seq")
    ]
    return verify_chain(_lines(controller_log(spec_path)), anchors)
