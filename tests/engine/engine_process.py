"""Start and stop the real engine (`python -m assistantctl.engine`) on loopback for tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from assistantctl.engine.settings import EngineSettings, ModelSettings, RateLimitSettings, SecuritySettings
from fake_models import free_port
from processes import stop_process


@dataclass
class RunningEngine:
    url: str
    process: subprocess.Popen
    settings_path: Path
    root: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics").text
        for line in text.splitlines():
            named = line.startswith((name + "{", name + " "))
            if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log_lines(self, *needles: str, timeout: float = 10) -> list[str]:
        """The engine's log (see `written_lines`)."""
        return written_lines(self.root / "logs" / "engine.log", *needles, timeout=timeout)

    def write_settings(self, settings: EngineSettings) -> None:
        self.settings_path.write_text(settings.to_json())

    def settings(self) -> EngineSettings:
        return EngineSettings.model_validate_json(self.settings_path.read_text())


def written_lines(path: Path, *needles: str, timeout: float = 10) -> list[str]:
    """The lines of a log the engine writes in the background every 0.2 s (its log, its audit log):
    once a line holds every one of `needles`, or, with none, once the file has not changed for half
    a second (for counting lines, or for showing that something is not there)."""
    deadline, last, steady = time.monotonic() + timeout, None, 0
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if needles and any(all(needle in line for needle in needles) for line in lines):
            return lines
        steady = steady + 1 if lines == last else 0
        if not needles and steady >= 2:
            return lines
        assert time.monotonic() < deadline, f"{path.name}: no line with {needles}" if needles else "it kept growing"
        last = lines
        time.sleep(0.25)


# Every test engine trusts this JWT key unless a test sets its own security settings, so that tests
# can speak as different users (`as_user`); anonymous callers are all the one local user.
TEST_JWT_SECRET = "tests.jwt"
TEST_JWT_KEY = "engine-tests-jwt-signing-key-of-32-bytes"


def as_user(user: str, **claims: Any) -> dict[str, str]:
    """Authorization headers that make a request `user`'s (a JWT signed with TEST_JWT_KEY)."""
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 600, **claims}, TEST_JWT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def model(name: str, provider: str = "builtin", **kwargs: Any) -> ModelSettings:
    return ModelSettings(name=name, provider=provider, model=kwargs.pop("model", name), **kwargs)


def build_settings(root: Path, port: int, models: list[ModelSettings], **overrides: Any) -> EngineSettings:
    values: dict[str, Any] = {
        "name": "test",
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "workers": 1,
        "data_dir": str(root / "data"),
        "log_dir": str(root / "logs"),
        "default_model": models[0].name,
        "models": models,
        "rate_limit": RateLimitSettings(requests_per_minute=600_000, burst=100_000, key="user"),
        "retry_backoff_seconds": 0.01,
    }
    values.update(overrides)
    return EngineSettings(**values)


def start_engine(
    root: Path,
    models: list[ModelSettings],
    secrets: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> RunningEngine:
    root.mkdir(parents=True, exist_ok=True)
    if "security" not in overrides:
        overrides["security"] = SecuritySettings(jwt_secret=TEST_JWT_SECRET)
        secrets = {TEST_JWT_SECRET: TEST_JWT_KEY, **(secrets or {})}
    if secrets is not None:
        (root / "secrets.json").write_text(json.dumps(secrets))
        overrides["secrets_file"] = str(root / "secrets.json")
    port = free_port()
    settings_path = root / "settings.json"
    settings_path.write_text(build_settings(root, port, models, **overrides).to_json())
    with open(root / "stderr.log", "wb") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "assistantctl.engine", "--settings", str(settings_path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **(env or {})},
        )
    engine = RunningEngine(f"http://127.0.0.1:{port}", process, settings_path, root)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"engine exited: {(root / 'stderr.log').read_text()}")
        try:
            if httpx.get(f"{engine.url}/health", timeout=0.5).status_code == 200:
                return engine
        except httpx.HTTPError:
            time.sleep(0.05)
    stop_engine(engine)
    raise RuntimeError("engine did not become healthy in 20 s")


def stop_engine(engine: RunningEngine) -> None:
    stop_process(engine.process, grace=10)


StartEngine = Callable[..., RunningEngine]
