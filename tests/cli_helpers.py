"""Run the real `assistantctl` console script against a spec written into a temporary folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
ASSISTANTCTL = str(Path(sys.executable).with_name("assistantctl"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_spec() -> dict:
    return yaml.safe_load((REPO / "assistant.yaml").read_text())


def write_spec(folder: Path, data: dict, name: str = "assistant.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assistantctl(spec: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [ASSISTANTCTL, "-f", str(spec), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=spec.parent,
        check=False,
    )


class Deployment:
    """A spec in `folder`, deployed to this machine under `folder/.assistant` on free ports."""

    def __init__(self, folder: Path, env: dict | None = None):
        self.folder = folder
        self.env = env or {}
        self.data = default_spec()
        self.data["deploy"]["ports"] = {"http": free_port(), "engine": free_port(), "https": free_port()}
        self.spec = write_spec(folder, self.data)
        self.root = folder / ".assistant"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.data['deploy']['ports']['http']}"

    def run(self, *args: str):
        return assistantctl(self.spec, *args, env=self.env)

    def rewrite(self, data: dict) -> None:
        self.data = data
        write_spec(self.folder, data)

    def chat(self, message: str) -> dict:
        """A chat through the deployment's nginx, as this machine's anonymous operator; must be a 200."""
        reply = httpx.post(f"{self.url}/api/v1/chat", json={"message": message}, timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def live_release(self) -> str:
        return os.readlink(self.root / "current").rsplit("/", 1)[-1]


@contextmanager
def applied(deployment: Deployment) -> Iterator[Deployment]:
    """`deployment` applied; everything it started is stopped at the end, whatever happened."""
    first = deployment.run("apply", "--auto-approve")
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        yield deployment
    finally:
        deployment.run("stop")
