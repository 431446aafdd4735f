"""One deployment lock per host, so two applies (or an apply and a rollback) never overlap.

The lock is a file in `<root>/run/` written atomically on each host before Ansible starts and
removed when the run ends, whatever its result. It names its holder: actor, action, and the
holder's process on the controller (host name, pid, the process's start time and the boot it
belongs to), so a later run on the same controller can tell a live holder from a dead one:

- a holder whose process is gone (or whose pid now belongs to another process) is stale: the next
  run takes the lock over and says so;
- a live holder, or one on another controller (whose processes this one cannot see), keeps the
  lock until it ends, or until `assistantctl unlock --force`.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from .audit import actor
from .remote import host_action
from .renderers import Target

RUNNING, GONE, UNKNOWN = "running", "gone", "unknown"


class Locked(Exception):
    """Some host is locked by another run; the message names the holder."""


@dataclass(frozen=True)
class Liveness:
    """Whether a lock's holder still runs: RUNNING, GONE or UNKNOWN, and why, in words."""

    state: str
    reason: str


def describe(holder: dict | None) -> str:
    if not holder:
        return "nobody"
    since = holder.get("locked_at")
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(since)) if since else "?"
    where = f"pid {holder.get('pid', '?')} on {holder.get('controller', '?')}"
    return f"{holder.get('actor', '?')} ({holder.get('action', '?')}, {where}, since {when})"


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot, /proc/<pid>/stat field 22), or None when no live
    process has that pid. A zombie counts as gone: it has exited, only its parent has not reaped it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after its last ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id() -> str | None:
    """This boot of the machine: start times from another boot say nothing about today's pids."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def this_process() -> dict:
    """The liveness fields of a lock held by this process."""
    pid = os.getpid()
    return {
        "controller": socket.gethostname(),
        "pid": pid,
        "pid_start": process_start(pid),
        "boot_id": boot_id(),
        "user": getpass.getuser(),
    }


def liveness(holder: dict | None) -> Liveness:
    """Whether the holder of a lock still runs, as far as this controller can see."""
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return Liveness(UNKNOWN, "the lock file does not name a process")
    pid, controller = holder["pid"], holder.get("controller")
    if controller != socket.gethostname():
        return Liveness(UNKNOWN, f"it runs on controller {controller}, whose processes this one cannot see")
    if holder.get("boot_id") and holder["boot_id"] != boot_id():
        return Liveness(GONE, f"{controller} has rebooted since it was taken")
    start = process_start(pid)
    if start is None:
        return Liveness(GONE, f"process {pid} is gone")
    if holder.get("pid_start") is None:
        # a lock written before start times were recorded: a running pid may or may not be the holder
        return Liveness(RUNNING, f"process {pid} runs (the lock has no start time to check it against)")
    if start != holder["pid_start"]:
        return Liveness(GONE, f"pid {pid} now belongs to another process (started later than the holder)")
    return Liveness(RUNNING, f"process {pid} is still running")


def _stderr(text: str) -> None:
    click.echo(text, err=True)


@contextmanager
def locked(
    targets: list[Target], action: str, echo: Callable[[str], None] = _stderr, spec_path: Path | None = None
) -> Iterator[None]:
    """Hold every target's lock for the duration of the block, or raise `Locked` touching nothing.

    A stale lock (its holder's process is gone on this controller) is taken over, with a line to
    `echo`; with `spec_path` the interrupted run also gets an audit entry there and on the host.
    """
    who = actor(spec_path.resolve().parent) if spec_path else actor()
    holder = {"actor": who, "action": action, **this_process(), "token": uuid.uuid4().hex}
    taken: list[Target] = []
    try:
        for target in targets:
            _acquire(target, holder, echo, spec_path)
            taken.append(target)
        yield
    finally:
        for target in taken:
            host_action(target, "unlock", token=holder["token"])


def _acquire(target: Target, holder: dict, echo: Callable[[str], None], spec_path: Path | None) -> None:
    name = target.host.name
    answer = host_action(target, "lock", holder=holder)
    if answer["acquired"]:
        return
    held = answer["holder"]
    alive = liveness(held)
    if alive.state != GONE:
        hint = "`assistantctl unlock --force` releases it" if alive.state == UNKNOWN else "wait for it to end"
        raise Locked(f"{name} is locked by {describe(held)}: {alive.reason}; if that run died, {hint}")
    # compare-and-swap on the host: if another run took the stale lock first, that run wins
    answer = host_action(target, "lock", holder=holder, replace=held.get("token"))
    if not answer["acquired"]:
        raise Locked(f"{name} is locked by {describe(answer['holder'])}")
    echo(f"{name}: took over the lock of an interrupted run, {describe(held)}: {alive.reason}")
    if spec_path is not None:
        _audit_interrupted(target, held, alive, spec_path, echo)


def _audit_interrupted(target: Target, held: dict, alive: Liveness, spec_path: Path, echo) -> None:
    from .audit import make_entry, record

    entry = make_entry(
        held.get("action", "?"),
        spec_path,
        [target.host.name],
        {},
        f"interrupted: {alive.reason}; its lock was taken over",
        interrupted_holder={k: held.get(k) for k in ("actor", "controller", "pid", "user", "locked_at")},
    )
    if record(entry, spec_path, [target]):
        echo(f"warning: audit entry for the interrupted run not written on: {target.host.name}")
