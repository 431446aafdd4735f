"""One deployment lock per host, so two applies (or an apply and a rollback) never overlap.

The lock is a file in `<root>/run/` created atomically on each host before Ansible starts and
removed when the run ends, whatever its result. A crashed run leaves it behind with its holder
(actor, controller, pid, time); `assistantctl unlock` shows and removes it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .audit import actor
from .remote import host_action
from .renderers import Target


class Locked(Exception):
    """Some host is locked by another run; the message names the holder."""


def describe(holder: dict | None) -> str:
    if not holder:
        return "nobody"
    since = holder.get("locked_at")
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(since)) if since else "?"
    where = f"pid {holder.get('pid', '?')} on {holder.get('controller', '?')}"
    return f"{holder.get('actor', '?')} ({holder.get('action', '?')}, {where}, since {when})"


@contextmanager
def locked(targets: list[Target], action: str) -> Iterator[None]:
    """Hold every target's lock for the duration of the block, or raise `Locked` touching nothing."""
    holder = {
        "actor": actor(),
        "action": action,
        "controller": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
    }
    taken: list[Target] = []
    try:
        for target in targets:
            answer = host_action(target, "lock", holder=holder)
            if not answer["acquired"]:
                raise Locked(
                    f"{target.host.name} is locked by {describe(answer['holder'])}; "
                    "if that run died, `assistantctl unlock` releases it"
                )
            taken.append(target)
        yield
    finally:
        for target in taken:
            host_action(target, "unlock", token=holder["token"])
