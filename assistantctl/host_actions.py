"""Small actions on a host's deploy root: the deployment lock and the host's audit log.

Standard library only, and no imports from the project: like facts.py, this file's source is sent
to a remote host's Python as it is (one SSH round trip per action); the local host runs it
in-process. `dispatch` takes one JSON-able request and returns a JSON-able answer.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time

LOCK = "apply.lock"
AUDIT = "audit.log"


def _lock_path(root: str) -> str:
    return os.path.join(root, "run", LOCK)


def read_lock(root: str) -> dict | None:
    try:
        with open(_lock_path(root), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"holder": "unreadable lock file", "token": None}


def acquire_lock(root: str, holder: dict) -> dict:
    """Create the lock file atomically (O_EXCL); answer who holds it when it already exists."""
    os.makedirs(os.path.join(root, "run"), mode=0o750, exist_ok=True)
    try:
        fd = os.open(_lock_path(root), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return {"acquired": False, "holder": read_lock(root)}
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(holder, out)
    return {"acquired": True, "holder": holder}


def release_lock(root: str, token: str | None) -> dict:
    """Remove the lock if `token` matches its holder's (None: whoever holds it, for `unlock`)."""
    held = read_lock(root)
    if held is None:
        return {"released": False, "holder": None}
    if token is not None and held.get("token") != token:
        return {"released": False, "holder": held}
    os.unlink(_lock_path(root))
    return {"released": True, "holder": held}


def append_audit(root: str, entry: dict) -> dict:
    """Append one JSON line to <root>/logs/audit.log (O_APPEND: lines never interleave)."""
    logs = os.path.join(root, "logs")
    os.makedirs(logs, mode=0o750, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(os.path.join(logs, AUDIT), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return {"written": True}


def last_audit(root: str, actions: list[str]) -> dict:
    """The newest audit entry whose action is one of `actions` (None when there is none)."""
    try:
        with open(os.path.join(root, "logs", AUDIT), encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        return {"entry": None}
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("action") in actions:
            return {"entry": entry}
    return {"entry": None}


HISTORY = os.path.join("data", "history.sqlite3")
KEYS = os.path.join("data", "keys.sqlite3")  # API keys: hashes only, but losing them locks every client out
DATABASES = (HISTORY, KEYS)


def backup(root: str) -> dict:
    """A tar.gz (base64) of the host's state without secrets: consistent copies of the history and
    API-key databases (SQLite's online backup, safe while the engine writes) and the audit log."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in DATABASES:
            database = os.path.join(root, name)
            if not os.path.exists(database):
                continue
            copy = os.path.join(tmp, os.path.basename(name))
            source, target = sqlite3.connect(database), sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            tar.add(copy, arcname=name)
        audit = os.path.join(root, "logs", AUDIT)
        if os.path.exists(audit):
            tar.add(audit, arcname=os.path.join("logs", AUDIT))
    return {"archive": base64.b64encode(buffer.getvalue()).decode()}


def restore(root: str, archive: str, python: str) -> dict:
    """Put a backup's databases in place: stop the engine, swap the files, start it again."""
    conf = os.path.join(root, "current", "supervisor", "supervisord.conf")
    supervisorctl = [python, "-m", "supervisor.supervisorctl", "-c", conf]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(archive)), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.name in DATABASES and m.isfile()}
        contents = {name: tar.extractfile(member).read() for name, member in members.items()}
    if not contents:
        return {"restored": []}
    stopped = os.path.exists(conf) and subprocess.run(
        supervisorctl + ["stop", "engine"], capture_output=True, check=False
    )
    running = bool(stopped) and stopped.returncode == 0
    restored = []
    for name in DATABASES:
        if name not in contents:
            continue
        database = os.path.join(root, name)
        os.makedirs(os.path.dirname(database), mode=0o750, exist_ok=True)
        staged = database + ".restore"
        with open(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(contents[name])
        for suffix in ("-wal", "-shm"):
            if os.path.exists(database + suffix):
                os.unlink(database + suffix)
        os.replace(staged, database)
        restored.append(name)
    if running:
        subprocess.run(supervisorctl + ["start", "engine"], capture_output=True, check=True)
    return {"restored": restored, "engine_restarted": running}


def dispatch(request: dict) -> dict:
    action, root = request["action"], request["root"]
    if action == "lock":
        return acquire_lock(root, {**request["holder"], "locked_at": time.time()})
    if action == "unlock":
        return release_lock(root, request.get("token"))
    if action == "read_lock":
        return {"holder": read_lock(root)}
    if action == "audit":
        return append_audit(root, request["entry"])
    if action == "last_audit":
        return last_audit(root, request["actions"])
    if action == "backup":
        return backup(root)
    if action == "restore":
        return restore(root, request["archive"], request["python"])
    raise ValueError(f"unknown host action {action!r}")


if __name__ == "__main__":
    json.dump(dispatch(json.loads(sys.stdin.readline())), sys.stdout)
