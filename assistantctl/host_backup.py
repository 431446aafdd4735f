"""Backups of a host's state and restores you can trust: a manifest, a check before anything stops,
a safety copy of what a restore replaces, a health check after it, and a way back when that fails.

A backup is a tar.gz: MANIFEST.json (each file's path, size, SHA-256 and mode; the history backend,
the assistantctl version, the time) and the files: consistent copies of `data/history.sqlite3` and
`data/keys.sqlite3` (SQLite backend), `postgres/history.dump` (PostgreSQL backend, added by the
controller: see backup_pg.py) and the host's `logs/audit.log`. No secrets.

Standard library only, and no imports from the project: like host_actions.py, this file's source is
sent to a remote host's Python as it is; the local host runs it in-process. `dispatch` takes one
JSON-able request and returns a JSON-able answer; a refused restore is an answer ({"refused": why}),
not an exception, so it reaches the controller the same way over SSH.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zlib

MANIFEST = "MANIFEST.json"
HISTORY = "data/history.sqlite3"
KEYS = "data/keys.sqlite3"  # API keys: hashes only, but losing them locks every client out
DATABASES = (HISTORY, KEYS)
AUDIT_LOG = "logs/audit.log"
PG_DUMP = "postgres/history.dump"
# What the engine cannot start without: a "backup" lacking these is not one.
REQUIRED_TABLES = {HISTORY: ("conversations", "messages"), KEYS: ("api_keys",)}
DATABASE_MODE = 0o600
# How long a restarted engine may take to answer /health. Twice this (restore, then rollback) must
# fit in the 60 s an SSH round trip may take (remote.py).
HEALTH_SECONDS = 20


class BadArchive(Exception):
    """The file is not a whole, untampered backup; str() is a one-line reason."""


def pack(files: list[tuple[str, bytes, int]], meta: dict) -> bytes:
    """A backup archive of `files` ((path, content, mode) each) with its manifest (`meta` plus the list)."""
    listed = [
        {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mode": f"{mode & 0o777:04o}"}
        for path, data, mode in files
    ]
    manifest = json.dumps({**meta, "files": listed}, indent=2, sort_keys=True).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, data, mode in [(MANIFEST, manifest, 0o600), *files]:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode & 0o777, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the files of a backup whose every file matches its manifest; BadArchive otherwise."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BadArchive(f"not a readable backup archive (tar.gz): {exc}") from None
    if MANIFEST not in files:
        raise BadArchive(f"no {MANIFEST}: not an assistantctl backup")
    try:
        manifest = json.loads(files.pop(MANIFEST))
        listed = {entry["path"]: entry for entry in manifest["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise BadArchive(f"{MANIFEST} is unreadable: {exc}") from None
    if set(files) != set(listed):
        odd = sorted(set(files) ^ set(listed))
        raise BadArchive(f"the archive and its manifest disagree on: {', '.join(odd)}")
    for path, content in files.items():
        if len(content) != listed[path]["size"] or hashlib.sha256(content).hexdigest() != listed[path]["sha256"]:
            raise BadArchive(f"{path} does not match its SHA-256 in the manifest (damaged or tampered)")
    return manifest, files


def check_databases(files: dict[str, bytes]) -> None:
    """Each SQLite file opens, passes PRAGMA integrity_check and holds the tables the engine needs."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in DATABASES:
            if name not in files:
                continue
            path = os.path.join(tmp, os.path.basename(name))
            with open(path, "wb") as out:
                out.write(files[name])
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                verdict = [row[0] for row in db.execute("PRAGMA integrity_check")]
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.DatabaseError as exc:
                raise BadArchive(f"{name} is not a usable SQLite database: {exc}") from None
            finally:
                db.close()
            if verdict != ["ok"]:
                raise BadArchive(f"{name} fails PRAGMA integrity_check: {'; '.join(verdict[:3])}")
            missing = [t for t in REQUIRED_TABLES[name] if t not in tables]
            if missing:
                raise BadArchive(f"{name} lacks the engine's table(s): {', '.join(missing)}")


def verify(data: bytes, backend: str) -> tuple[dict, dict[str, bytes]]:
    """unpack + check_databases, and the archive's backend must be the host's."""
    manifest, files = unpack(data)
    if manifest.get("backend") != backend:
        raise BadArchive(f"a {manifest.get('backend')} backup cannot be restored onto a {backend} history")
    check_databases(files)
    return manifest, files


# --- the host ------------------------------------------------------------------------------------


def _settings(root: str) -> dict:
    try:
        with open(os.path.join(root, "current", "engine", "settings.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _sqlite_copy(source: str, target: str) -> None:
    """A consistent copy (SQLite's online backup: safe while the engine writes, includes the WAL),
    0600 from its first byte."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, DATABASE_MODE))
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def backup(root: str, meta: dict) -> dict:
    """A backup archive (base64) of this host's databases and audit log; `meta` goes in the manifest."""
    backend = _settings(root).get("history_backend", "sqlite")
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in DATABASES if backend == "sqlite" else ():
            database = os.path.join(root, name)
            if os.path.exists(database):
                copy = os.path.join(tmp, os.path.basename(name))
                _sqlite_copy(database, copy)
                with open(copy, "rb") as f:
                    files.append((name, f.read(), DATABASE_MODE))
    audit = os.path.join(root, AUDIT_LOG)
    if os.path.exists(audit):
        with open(audit, "rb") as f:
            files.append((AUDIT_LOG, f.read(), os.stat(audit).st_mode))
    archive = pack(files, {**meta, "backend": backend, "created_at": time.time()})
    return {"archive": base64.b64encode(archive).decode()}


def _supervisorctl(root: str, python: str, *args: str) -> subprocess.CompletedProcess | None:
    conf = os.path.join(root, "current", "supervisor", "supervisord.conf")
    if not os.path.exists(conf):
        return None
    command = [python, "-m", "supervisor.supervisorctl", "-c", conf, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _healthy(port: int, timeout: float) -> str | None:
    """None once the engine answers /health with 200 within `timeout` seconds; else what it answered last."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return None
                last = f"http {response.status}"
        except OSError as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.25)
    return f"the engine did not answer /health on port {port} within {timeout:g} s ({last})"


def engine(root: str, python: str, op: str, timeout: float = HEALTH_SECONDS) -> dict:
    """`stop`: {"was_running"}; `start`: start it and health-check it, {"problem": None or why}."""
    if op == "stop":
        stopped = _supervisorctl(root, python, "stop", "engine")
        return {"was_running": stopped is not None and stopped.returncode == 0}
    _supervisorctl(root, python, "start", "engine")  # a crash at start-up shows in the health check
    return {"problem": _healthy(int(_settings(root).get("listen_port", 0)), timeout)}


def _put(database: str, data: bytes, uid: int, gid: int) -> None:
    """Swap `data` in as `database` (0600, owned uid:gid) in one rename; the old WAL must not replay on it."""
    staged = database + ".restore"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, DATABASE_MODE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, DATABASE_MODE)  # a stale staged file keeps its old mode through O_CREAT
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        out.write(data)
        out.flush()
        os.fsync(fd)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(database + suffix):
            os.unlink(database + suffix)
    os.replace(staged, database)


def restore(root: str, archive: str, python: str, timeout: float = HEALTH_SECONDS) -> dict:
    """Check the archive, then stop the engine, keep a safety copy of each database it replaces
    (`<db>.before-restore-<time>`, 0600), swap the files in (0600, the old owner), start the engine
    and health-check it; when it is not healthy, put the safety copies back and start it again.

    Answers {"refused": why} (nothing touched), or {"restored", "safety", "problem", "rolled_back"}.
    """
    try:
        _, files = verify(base64.b64decode(archive, validate=True), _settings(root).get("history_backend", "sqlite"))
    except (BadArchive, binascii.Error, ValueError) as exc:
        return {"refused": str(exc)}
    names = [name for name in DATABASES if name in files]
    if not names:
        return {"restored": [], "safety": [], "problem": None, "rolled_back": False}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data = os.path.join(root, "data")
    os.makedirs(data, mode=0o750, exist_ok=True)
    running = engine(root, python, "stop")["was_running"]
    saved: dict[str, str | None] = {}
    for name in names:
        database = os.path.join(root, name)
        owner = os.stat(database if os.path.exists(database) else data)
        saved[name] = None
        if os.path.exists(database):
            saved[name] = f"{database}.before-restore-{stamp}"
            _sqlite_copy(database, saved[name])
            if os.geteuid() == 0:
                os.chown(saved[name], owner.st_uid, owner.st_gid)
        _put(database, files[name], owner.st_uid, owner.st_gid)
    problem = engine(root, python, "start", timeout)["problem"] if running else None
    if problem is None:
        return {"restored": names, "safety": [p for p in saved.values() if p], "problem": None, "rolled_back": False}
    engine(root, python, "stop")
    for name, safety in saved.items():
        database = os.path.join(root, name)
        if safety is None:
            os.unlink(database)
            continue
        owner = os.stat(database)
        with open(safety, "rb") as f:
            _put(database, f.read(), owner.st_uid, owner.st_gid)
    after = engine(root, python, "start", timeout)["problem"]
    safety = [p for p in saved.values() if p]
    return {"restored": [], "safety": safety, "problem": problem, "rolled_back": True, "after_rollback": after}


def dispatch(request: dict) -> dict:
    action, root = request["action"], request["root"]
    if action == "backup":
        return backup(root, request.get("meta", {}))
    if action == "restore":
        return restore(root, request["archive"], request["python"], request.get("timeout", HEALTH_SECONDS))
    if action == "engine":
        return engine(root, request["python"], request["op"], request.get("timeout", HEALTH_SECONDS))
    raise ValueError(f"unknown backup action {action!r}")


if __name__ == "__main__":
    json.dump(dispatch(json.loads(sys.stdin.readline())), sys.stdout)
