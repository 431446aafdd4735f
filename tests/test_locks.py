"""Deployment locks on the bad day: killed applies, `unlock` during a live run, reused pids, and the
secret bundles a run leaves in temporary folders. Real local applies (cli_helpers.Deployment)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from assistantctl import host_actions
from assistantctl.locking import locked
from assistantctl.schema.loader import load_spec
from assistantctl.targets import targets
from cli_helpers import ASSISTANTCTL, Deployment
from processes import stop_process

SECRET = "lock-test-secret-never-left-behind"


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, read here independently of the code under test."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@pytest.fixture
def sleeper():
    """A running process of this test, to stand for a lock holder."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    stop_process(process)


@pytest.fixture
def deployment(tmp_path):
    """A spec with a secret; TMPDIR and XDG_RUNTIME_DIR point at folders of this test."""
    temp, runtime = tmp_path / "tmp", tmp_path / "xdg-runtime"
    temp.mkdir()
    runtime.mkdir(mode=0o700)
    env = {"ASSISTANT_TEST_JWT": SECRET, "TMPDIR": str(temp), "XDG_RUNTIME_DIR": str(runtime)}
    deployment = Deployment(tmp_path, env=env)
    deployment.data["security"]["jwt"] = {"enabled": False, "secret": "${env:ASSISTANT_TEST_JWT}"}
    deployment.rewrite(deployment.data)
    deployment.temp_locations = (temp, runtime)
    yield deployment
    deployment.run("stop")


def hold_lock(deployment: Deployment, pid: int, pid_start: int) -> None:
    holder = {
        "actor": "ci@here",
        "action": "apply",
        "controller": socket.gethostname(),
        "pid": pid,
        "pid_start": pid_start,
        "boot_id": boot_id(),
        "user": "ci",
        "token": "t",
    }
    assert host_actions.acquire_lock(str(deployment.root), {**holder, "locked_at": time.time()})["acquired"]


def lock_file(deployment: Deployment) -> Path:
    return deployment.root / "run" / "apply.lock"


def leftovers(deployment: Deployment) -> list[Path]:
    """Files in the test's temporary folders that are bundles or hold the secret."""
    found = []
    for folder in deployment.temp_locations:
        for path in folder.rglob("*"):
            if path.is_file() and (path.name.endswith(".tar.gz") or SECRET.encode() in path.read_bytes()):
                found.append(path)
    return found


def start_apply(deployment: Deployment) -> subprocess.Popen:
    return subprocess.Popen(
        [ASSISTANTCTL, "-f", str(deployment.spec), "apply", "--auto-approve"],
        env={**os.environ, "NO_COLOR": "1", **deployment.env},
        cwd=deployment.folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_unlock_refuses_a_live_holder_without_force(deployment, sleeper):
    hold_lock(deployment, sleeper.pid, start_time(sleeper.pid))
    refused = deployment.run("unlock")
    assert refused.returncode == 1
    assert f"local is locked by ci@here (apply, pid {sleeper.pid} on {socket.gethostname()}" in refused.stderr
    assert f"process {sleeper.pid} is still running" in refused.stderr
    assert lock_file(deployment).exists()
    forced = deployment.run("unlock", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "local: forced open the lock held by ci@here" in forced.stdout
    assert f"overriding: process {sleeper.pid} is still running" in forced.stdout
    assert not lock_file(deployment).exists()
    entry = json.loads((deployment.folder / ".assistantctl" / "audit.log").read_text().splitlines()[-1])
    assert (entry["action"], entry["result"]) == ("unlock", "forced")


def test_a_live_holder_blocks_apply(deployment, sleeper):
    hold_lock(deployment, sleeper.pid, start_time(sleeper.pid))
    blocked = deployment.run("apply", "--auto-approve")
    assert blocked.returncode == 1
    assert f"local is locked by ci@here (apply, pid {sleeper.pid}" in blocked.stderr
    assert json.loads(lock_file(deployment).read_text())["pid"] == sleeper.pid


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(deployment, sleeper):
    # the same pid, but a process that started after the holder did: the holder is gone
    hold_lock(deployment, sleeper.pid, start_time(sleeper.pid) - 1)
    unlocked = deployment.run("unlock")
    assert unlocked.returncode == 0, unlocked.stderr
    assert "local: released the stale lock held by ci@here" in unlocked.stdout
    assert f"pid {sleeper.pid} now belongs to another process" in unlocked.stdout
    assert not lock_file(deployment).exists()


@pytest.mark.slow
def test_a_killed_apply_leaves_a_lock_the_next_apply_takes_over_and_no_bundle(deployment):
    killed = start_apply(deployment)
    try:
        wait_for(lambda: lock_file(deployment).exists() and leftovers(deployment))
    finally:
        killed.kill()
        killed.wait()
    assert json.loads(lock_file(deployment).read_text())["pid"] == killed.pid
    assert leftovers(deployment), "the killed run had its secret bundle on disk"

    after = deployment.run("apply", "--auto-approve")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "local: took over the lock of an interrupted run" in after.stderr
    assert f"process {killed.pid} is gone" in after.stderr
    assert not lock_file(deployment).exists()
    assert leftovers(deployment) == []


@pytest.mark.slow
def test_sigterm_removes_the_bundle_at_once(deployment):
    terminated = start_apply(deployment)
    try:
        wait_for(lambda: leftovers(deployment))
    finally:
        terminated.terminate()
        terminated.wait()
    assert terminated.returncode == -signal.SIGTERM
    assert leftovers(deployment) == []


def test_taking_over_a_stale_lock_audits_the_interrupted_run(deployment):
    gone = subprocess.Popen(["true"])
    started = start_time(gone.pid)
    gone.wait()
    hold_lock(deployment, gone.pid, started)
    [target] = targets(load_spec(str(deployment.spec)), deployment.folder)
    said: list[str] = []
    with locked([target], "apply", echo=said.append, spec_path=deployment.spec):
        assert json.loads(lock_file(deployment).read_text())["pid"] == os.getpid()
    assert not lock_file(deployment).exists()
    assert len(said) == 1 and said[0].startswith("local: took over the lock of an interrupted run, ci@here")
    assert f"process {gone.pid} is gone" in said[0]
    for log in (deployment.folder / ".assistantctl" / "audit.log", deployment.root / "logs" / "audit.log"):
        entry = json.loads(log.read_text().splitlines()[-1])
        assert entry["action"] == "apply" and entry["result"].startswith("interrupted: process")
        assert entry["interrupted_holder"]["pid"] == gone.pid
