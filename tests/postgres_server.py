"""A throwaway PostgreSQL cluster for tests: initdb into a temp dir, a free loopback port, stopped by pid."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from processes import stop_process


@dataclass
class Service:
    process: subprocess.Popen
    url: str
    root: Path
    port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within 20 s: {log.read_text(errors='replace')}")


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"PostgreSQL's {name} is missing: apt-get install postgresql (these tests need the real server)")
    return found[-1]


@contextmanager
def postgres_cluster() -> Iterator[Service]:
    """A running cluster whose superuser `assistant` connects without a password (trust, loopback only).

    initdb runs as the `postgres` user when we are root (initdb refuses root).
    """
    initdb, server = pg_bin("initdb"), pg_bin("postgres")
    root = Path(tempfile.mkdtemp(prefix="assistant-pg-"))  # not under pytest's 0700 root-only tmp
    user: dict[str, Any] = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid}
    port, log = free_port(), root / "postgres.log"
    process: subprocess.Popen | None = None
    try:
        made = subprocess.run(
            [initdb, "-D", str(root / "data"), "-U", "assistant", "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            **user,
        )
        assert made.returncode == 0, f"initdb failed: {made.stderr}"
        args = ["-D", str(root / "data"), "-p", str(port), "-k", str(root), "-c", "listen_addresses=127.0.0.1"]
        with open(log, "wb") as out:
            process = subprocess.Popen([server, *args, "-c", "fsync=off"], stdout=out, stderr=out, **user)
        wait_for_port(port, process, "postgres", log)
        dsn = f"postgresql://assistant@127.0.0.1:{port}/postgres"
        wait_for_sql(dsn)
        yield Service(process, dsn, root, port)
    finally:
        if process is not None:
            stop_process(process, signal.SIGINT)  # postgres's "fast" shutdown
        shutil.rmtree(root, ignore_errors=True)


def wait_for_sql(dsn: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            asyncio.run(fetch(dsn, "SELECT 1"))
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()
