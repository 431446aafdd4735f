"""PostgreSQL history in backups: `pg_dump --format=custom` into the archive, `pg_restore --clean
--if-exists` back, both run on the controller, which holds the DSN (hosts need no client tools).

The API keys live in the same database then (table `api_keys`), so they come along. A restore
replaces one database, the DSN's, for every engine node that shares it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from . import host_backup
from .host_backup import PG_DUMP, BadArchive

# The engine cannot start without these: a dump lacking them is not a backup of its history.
TABLES = ("conversations", "messages", "api_keys")


class PgFailed(Exception):
    """pg_dump or pg_restore failed, or is missing; str() says which and why, in one line."""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise PgFailed(f"{name} is missing on this controller: install the PostgreSQL client (postgresql-client)")
    return found


def _run(command: list[str], dsn: str, what: str) -> bytes:
    """Run a client tool against `dsn`, its password in PGPASSWORD rather than on the command line."""
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = parts.password
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
        dsn = urlunsplit(parts._replace(netloc=netloc))
    done = subprocess.run([*command, f"--dbname={dsn}"], capture_output=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise PgFailed(f"{what} failed: {lines[-1]}")
    return done.stdout


def dump(dsn: str) -> bytes:
    return _run([_tool("pg_dump"), "--format=custom"], dsn, "pg_dump")


def check_dump(data: bytes) -> None:
    """The dump is one pg_restore can read and holds the engine's tables; BadArchive otherwise."""
    with tempfile.NamedTemporaryFile(suffix=".dump") as f:
        f.write(data)
        f.flush()
        listed = subprocess.run([_tool("pg_restore"), "--list", f.name], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise BadArchive(f"{PG_DUMP} is not a pg_dump archive: {listed.stderr.strip().splitlines()[-1:]}")
    tables = {line.split()[-2] for line in listed.stdout.splitlines() if " TABLE " in line and ";" in line}
    missing = [t for t in TABLES if t not in tables]
    if missing:
        raise BadArchive(f"{PG_DUMP} lacks the engine's table(s): {', '.join(missing)}")


def load(dsn: str, data: bytes) -> None:
    """Put a dump in place in one transaction: when pg_restore fails, the database is as it was."""
    command = [_tool("pg_restore"), "--clean", "--if-exists", "--single-transaction", "--no-owner", "--no-privileges"]
    with tempfile.NamedTemporaryFile(suffix=".dump") as f:
        f.write(data)
        f.flush()
        _run([*command, f.name], dsn, "pg_restore")


def with_dump(archive: bytes, dsn: str) -> bytes:
    """A host's backup archive with the database's dump added to it and to its manifest."""
    manifest, files = host_backup.unpack(archive)
    entries = {e["path"]: e for e in manifest.pop("files")}
    kept = [(path, data, int(entries[path]["mode"], 8)) for path, data in files.items()]
    return host_backup.pack([*kept, (PG_DUMP, dump(dsn), 0o600)], manifest)


def restore(
    archive: bytes, dsn: str, safety: Path, engine: Callable[..., dict], echo: Callable[[str], None]
) -> str | None:
    """Check the archive, keep a safety dump at `safety` (0600), stop the engine, load the dump,
    start and health-check the engine; when it is not healthy, load the safety dump back.

    `engine(op)` stops or starts the host's engine (host_backup.engine). Raises BadArchive (nothing
    touched) or PgFailed; returns None when the restore holds, else why it was rolled back.
    """
    _, files = host_backup.verify(archive, "postgres")
    if PG_DUMP not in files:
        raise BadArchive(f"a postgres backup without {PG_DUMP}")
    check_dump(files[PG_DUMP])
    before = dump(dsn)
    fd = os.open(safety, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(before)
    echo(f"safety copy of the database: {safety}")
    running = engine("stop")["was_running"]
    try:
        load(dsn, files[PG_DUMP])
    finally:  # a failed pg_restore changed nothing (one transaction): the engine goes back up either way
        problem = engine("start")["problem"] if running else None
    if problem is None:
        return None
    engine("stop")
    load(dsn, before)
    after = engine("start")["problem"]
    return problem if after is None else f"{problem}; and after the rollback: {after}"
