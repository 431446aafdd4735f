"""A throwaway PostgreSQL in the root namespace, listening on the fleet's bridge address.

The hosts reach it over the bridge like any database server on the network: TCP, password
authentication (scram-sha-256) for the `assistant` role from the fleet's subnet only. The cluster
lives in a temporary folder owned by the `postgres` account (initdb refuses root); `stop()` shuts
the server down (by pid) and removes the folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hosts import FleetError
from processes import stop_process

USER = "assistant"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FleetError(f"PostgreSQL's {name} is missing: apt-get install postgresql (the HA tests need it)")
    return found[-1]


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    root: Path
    address: str
    port: int
    password: str
    process: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{self.password}@{self.address}:{self.port}/postgres"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGINT)  # "fast" shutdown: disconnects the engines' pools
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(address: str, subnet: str) -> Postgres:
    """A cluster listening on `address`, admitting `assistant` (password) from `subnet` (CIDR)."""
    initdb, server = _pg_bin("initdb"), _pg_bin("postgres")
    account = pwd.getpwnam("postgres")
    as_postgres = {"user": account.pw_uid, "group": account.pw_gid}
    root = Path(tempfile.mkdtemp(prefix="assistant-fleet-pg-"))  # not under pytest's 0700 root-only tmp
    db = Postgres(root, address, _free_port(address), secrets.token_hex(12))
    try:
        os.chown(root, account.pw_uid, account.pw_gid)
        password_file = root / "password"
        password_file.write_text(db.password + "\n")
        os.chown(password_file, account.pw_uid, account.pw_gid)
        made = subprocess.run(
            [initdb, "-D", str(root / "data"), "-U", USER, "--pwfile", str(password_file), "-E", "UTF8", "--no-sync"]
            + ["--auth-local=trust", "--auth-host=scram-sha-256"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **as_postgres,
        )
        if made.returncode != 0:
            raise FleetError(f"initdb failed: {made.stderr}")
        hba = root / "pg_hba.conf"
        hba.write_text(f"local all all trust\nhost all {USER} {subnet} scram-sha-256\n")
        os.chown(hba, account.pw_uid, account.pw_gid)
        log = root / "postgres.log"
        options = [f"listen_addresses={address}", f"hba_file={hba}", "fsync=off", "max_connections=200"]
        with open(log, "wb") as out:
            db.process = subprocess.Popen(
                [server, "-D", str(root / "data"), "-p", str(db.port), "-k", str(root)]
                + [arg for option in options for arg in ("-c", option)],
                stdout=out,
                stderr=out,
                **as_postgres,
            )
        _wait_until_ready(db, log)
        return db
    except BaseException:
        db.stop()
        raise


def _wait_until_ready(db: Postgres, log: Path, limit: float = 20) -> None:
    """Until the server accepts connections on its TCP address (pg_isready), or fail with its log."""
    deadline = time.monotonic() + limit
    ready = _pg_bin("pg_isready")
    while time.monotonic() < deadline:
        if db.process.poll() is not None:
            raise FleetError(f"postgres exited (rc {db.process.returncode}): {log.read_text(errors='replace')}")
        probe = [ready, "-q", "-h", db.address, "-p", str(db.port), "-U", USER]
        if subprocess.run(probe, check=False, timeout=5).returncode == 0:
            return
        time.sleep(0.1)
    raise FleetError(f"postgres did not accept connections within {limit} s: {log.read_text(errors='replace')}")
