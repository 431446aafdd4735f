"""The web channel's CORS origins going through the real loader and renderers, and nginx rendered
from that same spec in front of a test engine, for the tests of what a browser gets.

`running_edge` needs the real nginx binary and fails (it does not skip) when there is none.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings
from assistantctl.renderers.nginx import render as render_nginx
from assistantctl.schema.loader import parse_spec
from engine_process import RunningEngine
from fake_models import free_port
from processes import stop_process

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "assistant.yaml"
APP = "https://app.example.com"
# Near misses of APP that an origin check by prefix, suffix or substring would let through.
STRANGERS = [
    "https://evil.example.com",
    "http://app.example.com",
    "https://app.example.com:8443",
    "https://app.example.com.evil.net",
    "https://xapp.example.com",
    "null",
]


def spec_with(origins: list[str], root: Path, engine_port: int = 18080, http_port: int = 18081) -> Target:
    """The default spec with `origins` as the web channel's cors_origins, as a render target."""
    data = yaml.safe_load(DEFAULT_SPEC.read_text(encoding="utf-8"))
    data.setdefault("channels", {}).setdefault("web", {})["cors_origins"] = origins
    data.setdefault("deploy", {}).setdefault("ports", {}).update({"engine": engine_port, "http": http_port})
    spec = parse_spec(yaml.safe_dump(data, sort_keys=False))
    return Target(spec=spec, host=spec.deploy.hosts[0], root=str(root), python=sys.executable)


def web_channel(origins: list[str], root: Path) -> list:
    """The web channel exactly as the renderer writes it for `origins`."""
    return [c for c in build_settings(spec_with(origins, root / "spec-root")).channels if c.name == "web"]


def nginx_bin() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail("nginx is not installed: apt-get install nginx (these tests need the real binary)")
    return found


def healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_edge(engine: RunningEngine, root: Path) -> Iterator[str]:
    """nginx rendered from the default spec (APP allowed) under `root`, in front of `engine`; its
    base URL once it answers /health. Stopped on leaving."""
    port = free_port()
    target = spec_with([APP], root, int(engine.url.rsplit(":", 1)[1]), port)
    folder = root / "releases" / "x" / "nginx"
    for sub in ("logs", "run", "tmp/nginx", "releases/x/nginx"):  # what apply makes before nginx starts
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, text in render_nginx(target).items():
        (folder / name).write_text(text)
    cmd = [nginx_bin(), "-p", f"{folder}/", "-c", "nginx.conf", "-e", f"{root}/logs/nginx-error.log"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not healthy(f"http://127.0.0.1:{port}"):
            assert process.poll() is None, "nginx exited at start"
            assert time.monotonic() < deadline, "nginx did not answer /health in 10 s"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, grace=10)
