"""The Docker Compose stack for real: `assistantctl compose --build` builds the images on a Debian
base through the docker SDK, docker-compose 1.29 starts them on a daemon of the test's own
(tests/docker_host.py), and the stack answers /health and a chat through its nginx, comes back
from a killed engine, takes a changed spec and goes down. With monitoring on, Prometheus (on a
network of its own) scrapes the engine through nginx and node-exporter, and Alertmanager is ready.
No registry is involved anywhere."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from docker_host import DockerHost, docker_host

from api_keys import bearer
from assistantctl.images import ENGINE_UID
from cli_helpers import assistantctl, default_spec, free_port, write_spec

SETTINGS = "/srv/assistant/current/engine/settings.json"
UP_SECONDS = 120


@pytest.fixture(scope="module")
def docker() -> Iterator[DockerHost]:
    with docker_host() as host:
        yield host


class Stack:
    """A spec in `folder` and its compose stack in `folder/stack`, on the test's docker daemon."""

    def __init__(self, folder: Path, docker: DockerHost):
        self.docker, self.folder, self.out = docker, folder, folder / "stack"
        self.data = default_spec()
        self.data["deploy"]["ports"] = {"http": free_port(), "engine": 8081, "https": free_port()}
        # Grafana and ELK come from their vendors' registries, which the test does not use.
        self.data["monitoring"]["prometheus"] = {"enabled": True, "scrape_interval_seconds": 2}
        self.data["monitoring"]["alertmanager"] = {"enabled": True}
        self.spec = write_spec(folder, self.data)
        self.url = f"http://127.0.0.1:{self.data['deploy']['ports']['http']}"

    def write_and_build(self) -> None:
        result = assistantctl(
            self.spec,
            "compose",
            str(self.out),
            "--build",
            "--debian",
            self.docker.debian,
            timeout=1200,
            env=self.docker.env,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        command = [
            shutil.which("docker-compose") or "docker-compose",
            "-f",
            str(self.out / "docker-compose.yml"),
            *args,
        ]
        result = subprocess.run(
            command, cwd=self.out, env=self.docker.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def container(self, service: str):
        client = self.docker.client()
        project = self.out.name
        found = client.containers.list(
            all=True,
            filters={"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]},
        )
        assert len(found) == 1, [c.name for c in found]
        return found[0]

    def wait_healthy(self, service: str, wanted: str = "healthy", seconds: float = UP_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            container = self.container(service)
            state = container.attrs["State"]
            if state.get("Health", {}).get("Status") == wanted:
                return
            time.sleep(0.5)
        status = state.get("Health", {}).get("Status")
        logs = self.compose("logs", "--tail=40").stdout
        pytest.fail(f"{service} is {status} after {seconds} s, not {wanted}:\n{logs}")

    def wait_answers(self, seconds: float = UP_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"{self.url}/health did not answer within {seconds} s:\n{self.compose('logs', '--tail=40').stdout}")

    def address(self, service: str, network: str) -> str:
        """The service's address on one of the stack's networks (the test host has a leg on each)."""
        networks = self.container(service).attrs["NetworkSettings"]["Networks"]
        return networks[f"{self.out.name}_{network}"]["IPAddress"]

    def wait_targets_up(self, prometheus: str, seconds: float = UP_SECONDS) -> dict[str, dict]:
        """Prometheus' active targets by job once every one has been scraped and is up."""
        deadline = time.monotonic() + seconds
        found: dict[str, dict] = {}
        while time.monotonic() < deadline:
            try:
                active = httpx.get(f"{prometheus}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
                found = {t["labels"]["job"]: t for t in active}
                if found and all(t["health"] == "up" for t in found.values()):
                    return found
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"Prometheus targets not all up within {seconds} s: {found}")

    def chat(self, key: str, message: str) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/chat", json={"message": message}, headers=bearer(key), timeout=10)

    def create_key(self, user: str) -> str:
        result = self.compose(
            "exec",
            "-T",
            "engine",
            "python",
            "-m",
            "assistantctl.engine.keys_cli",
            "--settings",
            SETTINGS,
            "create",
            "--user",
            user,
            "--scopes",
            "chat",
        )
        return json.loads(result.stdout)["key"]


def _engine_pids(container) -> list[int]:
    """Host pids of every process in the container (docker top prints them in the PID column)."""
    top = container.top()
    column = top["Titles"].index("PID")
    return [int(row[column]) for row in top["Processes"]]


def test_compose_writes_secret_files_only_when_asked_at_mode_0600_for_the_engine_user(tmp_path):
    data = default_spec()
    data["models"]["providers"]["cloud"] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "api_base": "https://api.openai.com/v1",
        "api_key": "${env:COMPOSE_TEST_KEY}",
    }
    data.setdefault("monitoring", {})["grafana"] = {"enabled": True, "admin_password": "${env:COMPOSE_TEST_GRAFANA}"}
    spec = write_spec(tmp_path, data)
    env = {"COMPOSE_TEST_KEY": "sk-FAKE-COMPOSE-1", "COMPOSE_TEST_GRAFANA": "FAKE-GRAFANA-PASSWORD"}
    plain = assistantctl(spec, "compose", str(tmp_path / "plain"), env=env)
    assert plain.returncode == 0, plain.stderr
    assert not (tmp_path / "plain" / "secrets").exists()
    assert "sk-FAKE-COMPOSE-1" not in "".join(p.read_text() for p in (tmp_path / "plain").rglob("*") if p.is_file())
    assert (tmp_path / "plain" / ".env").read_text().startswith("ASSISTANTCTL_IMAGE_TAG=")
    asked = assistantctl(spec, "compose", str(tmp_path / "asked"), "--secrets", env=env)
    assert asked.returncode == 0, asked.stderr
    secret = tmp_path / "asked" / "secrets" / "engine-secrets.json"
    assert json.loads(secret.read_text()) == {"models.providers.cloud.api_key": "sk-FAKE-COMPOSE-1"}
    info = secret.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    if os.geteuid() == 0:  # only root can hand the file to the engine image's user
        assert (info.st_uid, info.st_gid) == (ENGINE_UID, ENGINE_UID)
        # and only the engine's: another service's secret is not the engine user's to read
        (grafana,) = (tmp_path / "asked" / "secrets").glob("grafana-*")
        assert grafana.stat().st_uid == 0 and stat.S_IMODE(grafana.stat().st_mode) == 0o600


def test_stack_builds_starts_serves_recovers_redeploys_and_goes_down(docker, tmp_path):
    stack = Stack(tmp_path, docker)
    stack.write_and_build()
    stack.compose("up", "-d")
    stack.wait_healthy("engine")
    stack.wait_answers()

    engine = stack.container("engine")
    assert engine.attrs["Config"]["User"] == f"{ENGINE_UID}:{ENGINE_UID}"
    assert stack.compose("exec", "-T", "engine", "id", "-u").stdout.strip() == str(ENGINE_UID)
    key = stack.create_key("alice")
    time.sleep(1)  # the engine picks new keys up within half a second
    answer = stack.chat(key, "hello")
    assert answer.status_code == 200, answer.text
    assert answer.json()["reply"]
    assert httpx.post(f"{stack.url}/api/v1/chat", json={"message": "hi"}, timeout=10).status_code == 401

    # Monitoring, apart from the engine's namespace: Prometheus scrapes the engine through nginx's
    # metrics location (which admits the monitoring network, and not the published port's callers)
    # and node-exporter, by service name; Alertmanager is ready.
    prometheus = f"http://{stack.address('prometheus', 'monitoring')}:9090"
    targets = stack.wait_targets_up(prometheus)
    assert set(targets) == {"engine", "node"}
    assert targets["engine"]["scrapeUrl"] == f"http://nginx:{stack.data['deploy']['ports']['http']}/metrics"
    assert targets["node"]["scrapeUrl"] == "http://node-exporter:9100/metrics"
    assert httpx.get(f"{stack.url}/metrics", timeout=5).status_code == 403
    alertmanager = f"http://{stack.address('alertmanager', 'monitoring')}:9093"
    assert httpx.get(f"{alertmanager}/-/ready", timeout=5).status_code == 200
    # The engine's own port is on the pod's loopback only: nothing on the monitoring network reaches it.
    engine_port = stack.data["deploy"]["ports"]["engine"]
    direct = stack.container("prometheus").exec_run(["curl", "-fsS", "-m", "2", f"http://nginx:{engine_port}/health"])
    assert direct.exit_code != 0, direct.output

    # A crash (SIGKILL of the engine's PID 1 from outside): the restart policy brings it back, and
    # nginx, in the namespace the pod container holds, reaches the new engine.
    os.kill(engine.attrs["State"]["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while stack.container("engine").attrs["RestartCount"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.container("engine").attrs["RestartCount"] >= 1
    stack.wait_healthy("engine")
    assert stack.chat(key, "again").status_code == 200

    # A changed spec: one worker; up -d recreates the engine with the new limits and settings.
    stack.data["limits"]["concurrency"]["workers"] = 1
    write_spec(tmp_path, stack.data)
    stack.write_and_build()
    stack.compose("up", "-d")
    stack.wait_healthy("engine")
    recreated = stack.container("engine")
    assert recreated.id != engine.id
    assert recreated.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    settings = json.loads(stack.compose("exec", "-T", "engine", "cat", SETTINGS).stdout)
    assert settings["workers"] == 1
    stack.wait_answers()
    assert stack.chat(key, "after the change").status_code == 200  # history and keys live in the data volume

    stack.compose("down")
    assert docker.client().containers.list(all=True) == []


def test_engine_healthcheck_turns_unhealthy_when_the_engine_stops_answering(docker, tmp_path):
    stack = Stack(tmp_path, docker)
    stack.write_and_build()
    stack.compose("up", "-d", "engine")
    stack.wait_healthy("engine")
    engine = stack.container("engine")
    pids = _engine_pids(engine)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        stack.wait_healthy("engine", "unhealthy", seconds=60)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    stack.wait_healthy("engine")
    stack.compose("down")
