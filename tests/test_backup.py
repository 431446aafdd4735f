"""Backups and restores you can trust, on a real local deployment (SQLite) and a real PostgreSQL.

A backup carries a manifest; `restore` checks an archive before it stops anything, keeps a safety
copy of what it replaces, health-checks the engine afterwards and puts the safety copy back when
the engine does not come back.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import tarfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from api_keys import bearer, create_key, wait_for_key
from cli_helpers import Deployment, applied
from postgres_server import postgres_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    with applied(Deployment(tmp_path_factory.mktemp("backup"))) as deployment:
        yield deployment


def key_for(deployment: Deployment, user: str) -> dict[str, str]:
    key = bearer(create_key(deployment.root / "current" / "engine" / "settings.json", user))
    wait_for_key(deployment.url, key)
    return key


def chat(deployment: Deployment, message: str, headers: dict[str, str]) -> dict:
    said = httpx.post(f"{deployment.url}/api/v1/chat", json={"message": message}, headers=headers, timeout=10)
    assert said.status_code == 200, said.text
    return said.json()


def history(deployment: Deployment, headers: dict[str, str]) -> list[str]:
    """The user's messages (oldest first), waiting up to 20 s for an engine that is restarting."""
    deadline = time.monotonic() + 20
    while True:
        try:
            answer = httpx.get(f"{deployment.url}/api/v1/history", headers=headers, timeout=5)
            if answer.status_code == 200:
                return [m["content"] for m in reversed(answer.json()["messages"]) if m["role"] == "user"]
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the engine did not answer /api/v1/history"
        time.sleep(0.2)


def take_backup(deployment: Deployment, folder: Path) -> Path:
    saved = deployment.run("backup", "--out", str(folder))
    assert saved.returncode == 0, saved.stdout + saved.stderr
    [archive] = folder.glob("local-*.tar.gz")
    return archive


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def repack(archive: bytes, replace: dict[str, bytes], fix_manifest: bool = True, drop=()) -> bytes:
    """`archive` with some files replaced; the manifest is made to match them when `fix_manifest`."""
    files = {**members(archive), **replace}
    manifest = json.loads(files["MANIFEST.json"])
    if fix_manifest:
        for entry in manifest["files"]:
            data = files[entry["path"]]
            entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    files["MANIFEST.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            if name in drop:
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sqlite_file(tmp_path: Path, script: str) -> bytes:
    path = tmp_path / "made.sqlite3"
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(script)
    db.close()
    return path.read_bytes()


def engine_pid(deployment: Deployment) -> str:
    conf = deployment.root / "current" / "supervisor" / "supervisord.conf"
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "pid", "engine"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()


def data_files(deployment: Deployment) -> list[str]:
    return sorted(p.name for p in (deployment.root / "data").iterdir() if not p.name.endswith(("-wal", "-shm")))


def test_a_backup_carries_a_manifest_of_every_file_it_holds(deployment, tmp_path):
    archive = take_backup(deployment, tmp_path)
    files = members(archive.read_bytes())
    manifest = json.loads(files.pop("MANIFEST.json"))
    assert manifest["backend"] == "sqlite"
    assert manifest["assistantctl_version"] == version("assistantctl")
    assert abs(time.time() - manifest["created_at"]) < 120
    listed = {e["path"]: e for e in manifest["files"]}
    assert set(listed) == set(files) >= {"data/history.sqlite3", "data/keys.sqlite3", "logs/audit.log"}
    for name, data in files.items():
        assert listed[name]["size"] == len(data)
        assert listed[name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert listed["data/history.sqlite3"]["mode"] == "0600"
    assert archive.stat().st_mode & 0o777 == 0o600


BAD = {
    "random bytes": lambda good, tmp: bytes(range(256)) * 64,
    "a truncated archive": lambda good, tmp: good[: len(good) // 2],
    "a tampered database": lambda good, tmp: repack(
        good, {"data/history.sqlite3": members(good)["data/history.sqlite3"][:-4096] + b"\0" * 4096}, False
    ),
    "no manifest": lambda good, tmp: repack(good, {}, drop=("MANIFEST.json",)),
    "a file that is not a database": lambda good, tmp: repack(good, {"data/history.sqlite3": b"not a db" * 2048}),
    "a database without the engine's tables": lambda good, tmp: repack(
        good, {"data/history.sqlite3": sqlite_file(tmp, "CREATE TABLE other (x TEXT);")}
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_archive_is_refused_before_anything_is_touched(deployment, tmp_path, kind):
    fay = key_for(deployment, "fay")
    chat(deployment, f"still here after {kind}", fay)
    good = take_backup(deployment, tmp_path / "good").read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(BAD[kind](good, tmp_path))
    files, pid, before = data_files(deployment), engine_pid(deployment), history(deployment, fay)

    refused = deployment.run("restore", str(bad), "--host", "local")

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith("error: local: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert data_files(deployment) == files  # no safety copy, nothing swapped
    assert engine_pid(deployment) == pid  # never stopped
    assert history(deployment, fay) == before
    chat(deployment, "the engine still answers", fay)
    audited = json.loads((deployment.folder / ".assistantctl" / "audit.log").read_text().splitlines()[-1])
    assert (audited["action"], audited["result"][:8]) == ("restore", "refused:")


def test_a_good_restore_keeps_a_safety_copy_and_the_databases_stay_0600(deployment, tmp_path):
    gil = key_for(deployment, "gil")
    chat(deployment, "kept by the backup", gil)
    archive = take_backup(deployment, tmp_path)
    chat(deployment, "said after the backup", gil)
    owner = (deployment.root / "data" / "history.sqlite3").stat()

    restored = deployment.run("restore", str(archive), "--host", "local")

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "local: restored data/history.sqlite3, data/keys.sqlite3" in restored.stdout
    assert history(deployment, gil) == ["kept by the backup"]
    for name in ("history.sqlite3", "keys.sqlite3"):
        live = (deployment.root / "data" / name).stat()
        assert live.st_mode & 0o777 == 0o600 and (live.st_uid, live.st_gid) == (owner.st_uid, owner.st_gid)
        [safety] = (deployment.root / "data").glob(f"{name}.before-restore-*")
        assert str(safety) in restored.stdout
        assert safety.stat().st_mode & 0o777 == 0o600
    [safety] = (deployment.root / "data").glob("history.sqlite3.before-restore-*")
    with sqlite3.connect(safety) as db:
        users = [u for (u,) in db.execute("SELECT user FROM messages WHERE role = 'user'")]
    assert users.count("gil") == 2  # the safety copy holds what the restore replaced
    safety.unlink()
    next((deployment.root / "data").glob("keys.sqlite3.before-restore-*")).unlink()


def test_a_restore_the_engine_cannot_run_on_is_rolled_back_to_the_safety_copy(deployment, tmp_path):
    hal = key_for(deployment, "hal")
    chat(deployment, "survives a failed restore", hal)
    good = take_backup(deployment, tmp_path / "good").read_bytes()
    # The tables the check looks for are there, but the engine cannot read its keys from this one.
    broken = sqlite_file(tmp_path, "CREATE TABLE api_keys (id TEXT PRIMARY KEY);")
    bad = tmp_path / "unservable.tar.gz"
    bad.write_bytes(repack(good, {"data/keys.sqlite3": broken}))

    failed = deployment.run("restore", str(bad), "--host", "local", "--health-timeout", "8")

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "rolled back" in failed.stderr and failed.stderr.count("\n") == 1, failed.stderr
    assert history(deployment, hal) == ["survives a failed restore"]  # hal's key works again, too
    keys = sqlite3.connect(deployment.root / "data" / "keys.sqlite3")
    assert keys.execute("SELECT count(*) FROM api_keys WHERE user_name = 'hal'").fetchone() == (1,)
    keys.close()


@pytest.fixture(scope="module")
def on_postgres(tmp_path_factory):
    with postgres_cluster() as server:
        deployment = Deployment(tmp_path_factory.mktemp("backup-pg"), env={"ASSISTANT_TEST_PG": server.url})
        deployment.data["deploy"]["state"] = {"history": "postgres", "postgres_dsn": "${env:ASSISTANT_TEST_PG}"}
        deployment.rewrite(deployment.data)
        with applied(deployment):
            yield deployment


def test_postgres_history_and_keys_are_backed_up_and_restored(on_postgres, tmp_path):
    ivy = key_for(on_postgres, "ivy")
    chat(on_postgres, "in the dump", ivy)
    archive = take_backup(on_postgres, tmp_path)
    manifest = json.loads(members(archive.read_bytes())["MANIFEST.json"])
    assert manifest["backend"] == "postgres"
    assert "postgres/history.dump" in {e["path"] for e in manifest["files"]}
    assert not (on_postgres.root / "data" / "history.sqlite3").exists()

    chat(on_postgres, "after the dump", ivy)
    late = key_for(on_postgres, "late")
    assert history(on_postgres, ivy) == ["in the dump", "after the dump"]

    tampered = tmp_path / "tampered.tar.gz"
    dump = members(archive.read_bytes())["postgres/history.dump"]
    tampered.write_bytes(repack(archive.read_bytes(), {"postgres/history.dump": dump[:-64]}, False))
    refused = on_postgres.run("restore", str(tampered), "--host", "local")
    assert refused.returncode == 1 and refused.stderr.startswith("error: "), refused.stdout + refused.stderr
    assert history(on_postgres, ivy) == ["in the dump", "after the dump"]

    restored = on_postgres.run("restore", str(archive), "--host", "local")

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert history(on_postgres, ivy) == ["in the dump"]
    wait_for_key(on_postgres.url, late, known=False)
    gone = httpx.get(f"{on_postgres.url}/api/v1/history", headers=late, timeout=5)
    assert gone.status_code == 401  # a key made after the backup is gone with the rest
    [safety] = tmp_path.glob("local-before-restore-*.dump")
    assert str(safety) in restored.stdout and safety.stat().st_mode & 0o777 == 0o600
