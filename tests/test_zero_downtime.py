"""Engine settings go live under load without one failed request (issue 12, zero-downtime changes).

A real local apply (supervisord, nginx, the engine with 2 workers), then steady chat traffic through
nginx while a second apply changes the engine's settings: a reloadable change goes through the
workers' SIGHUP reload (same processes), a change that needs new processes rolls the workers (all
new processes). Every response is counted: none may be a 5xx or a connection error, and afterwards
/health shows the new settings' sha256 (the health check of the apply waits for exactly that).

One deployment is shared by the tests in this module, in order; the fixture stops it at the end.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from cli_helpers import Deployment, applied

pytestmark = pytest.mark.slow

_CLIENTS = 4  # concurrent clients, each sending its next request as soon as the last one is answered


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("zero-downtime"))
    data = copy.deepcopy(deployment.data)
    # The load is one anonymous user: keep the rate limits out of the way.
    data["limits"]["rate_limit"] = {"requests_per_minute": 1_000_000, "burst": 100_000}
    deployment.rewrite(data)
    with applied(deployment) as deployment:
        yield deployment


class Load:
    """`_CLIENTS` clients posting to /api/v1/chat through nginx until stopped; counts every outcome."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(_CLIENTS)))

    async def _client(self, client: httpx.AsyncClient, n: int) -> None:
        while not self._stop.is_set():
            try:
                reply = await client.post("/api/v1/chat", json={"message": f"client {n}"})
            except httpx.HTTPError as exc:
                self.outcomes[type(exc).__name__] += 1
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            self.outcomes[str(reply.status_code)] += 1
            if reply.status_code != 200:
                self.failures.append(f"{reply.status_code}: {reply.text[:200]}")

    @property
    def answered(self) -> int:
        return self.outcomes["200"]


def settings_file(deployment: Deployment) -> Path:
    return deployment.root / "current" / "engine" / "settings.json"


def engine_health(deployment: Deployment) -> dict:
    port = deployment.data["deploy"]["ports"]["engine"]
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()


def engine_parent(deployment: Deployment) -> int:
    conf = deployment.root / "current" / "supervisor" / "supervisord.conf"
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "pid", "engine"]
    return int(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)


def worker_pids(parent: int) -> set[int]:
    """uvicorn's live workers under the engine's parent (not multiprocessing's resource tracker)."""
    workers = set()
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        with suppress(FileNotFoundError):  # it exited since the list was read
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(int(pid))
    return workers


def wait_for(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextmanager
def applied_under_load(deployment: Deployment, data: dict) -> Iterator[Load]:
    """Apply `data` while the load runs; the load keeps running until every worker is settled."""
    deployment.rewrite(data)
    with Load(deployment.url) as load:
        wait_for(lambda: load.answered >= 50, 30, "the load to get going")
        result = deployment.run("apply", "--auto-approve")
        assert result.returncode == 0, result.stdout + result.stderr
        yield load
        time.sleep(1)  # answers from whatever ran last are counted too
    print(f"outcomes during the apply: {dict(load.outcomes)}")


def expected_digest(deployment: Deployment) -> str:
    return hashlib.sha256(settings_file(deployment).read_bytes()).hexdigest()


def runs_new_settings_everywhere(deployment: Deployment, workers: int) -> bool:
    """Every worker answered /health with the live file's digest (asked until each pid was seen)."""
    want, seen = expected_digest(deployment), {}
    for _ in range(workers * 20):
        health = engine_health(deployment)
        seen[health["pid"]] = health["settings_sha256"]
        if len(seen) == workers:
            break
    return len(seen) == workers and set(seen.values()) == {want}


def test_health_tells_a_loopback_peer_which_settings_it_runs(deployment):
    health = engine_health(deployment)
    assert health["settings_sha256"] == expected_digest(deployment)
    assert health["pid"] in worker_pids(engine_parent(deployment))


def test_a_reloadable_change_goes_live_in_place_without_a_failed_request(deployment):
    parent = engine_parent(deployment)
    before = worker_pids(parent)
    data = copy.deepcopy(deployment.data)
    data["models"]["providers"]["local"]["max_concurrency"] = 32
    with applied_under_load(deployment, data) as load:
        assert engine_health(deployment)["settings_sha256"] == expected_digest(deployment)
        wait_for(lambda: runs_new_settings_everywhere(deployment, 2), 30, "every worker to run the new settings")
    assert load.failures == [], load.outcomes
    assert load.answered > 0
    assert engine_parent(deployment) == parent and worker_pids(parent) == before, "the workers were replaced"


def test_a_change_that_needs_new_workers_rolls_them_without_a_failed_request(deployment):
    parent = engine_parent(deployment)
    before = worker_pids(parent)
    data = copy.deepcopy(deployment.data)
    data["monitoring"]["logging"]["level"] = "warning"
    with applied_under_load(deployment, data) as load:
        # apply returned: every worker that accepts runs the new settings (the parent said so)
        assert runs_new_settings_everywhere(deployment, 2)
        assert engine_health(deployment)["workers"]["settings_sha256"] == expected_digest(deployment)
        wait_for(lambda: len(worker_pids(parent)) == 2 and not worker_pids(parent) & before, 180, "the roll to end")
    assert load.failures == [], load.outcomes
    assert engine_parent(deployment) == parent, "the engine was restarted, not rolled"
    assert runs_new_settings_everywhere(deployment, 2)


def test_a_new_worker_count_is_reached_without_a_failed_request(deployment):
    parent = engine_parent(deployment)
    before = worker_pids(parent)
    data = copy.deepcopy(deployment.data)
    data["limits"]["concurrency"]["workers"] = 3
    with applied_under_load(deployment, data) as load:
        assert runs_new_settings_everywhere(deployment, 3)
        wait_for(lambda: len(worker_pids(parent)) == 3 and not worker_pids(parent) & before, 180, "three new workers")
    assert load.failures == [], load.outcomes
    assert engine_parent(deployment) == parent
    assert runs_new_settings_everywhere(deployment, 3)


def test_plan_says_when_a_change_restarts_the_engine_instead(deployment):
    """A new supervisor program for the engine (here: its stop grace time follows the request
    timeout) is restarted by `supervisorctl update`: plan says so before anyone applies it."""
    applied_spec = copy.deepcopy(deployment.data)
    data = copy.deepcopy(applied_spec)
    data["limits"].setdefault("timeouts", {})["request_seconds"] = 187
    deployment.rewrite(data)
    try:
        host = json.loads(deployment.run("plan", "--json").stdout)["hosts"][0]
        assert host["engine_restart"] == "its supervisor program changed (a new runtime or command)"
        text = deployment.run("plan").stdout
        assert "! engine restarts: its supervisor program changed" in text, text
    finally:
        deployment.rewrite(applied_spec)
    assert json.loads(deployment.run("plan", "--json").stdout)["hosts"][0]["engine_restart"] is None
