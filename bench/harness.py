"""What bench/engine_chat.py starts and measures: processes on loopback, wrk runs, worker memory.

Every process is started here and stopped by its own pid. The engine's settings and nginx's
config are rendered from a spec by the project's own renderers, so the bench runs what `apply`
would deploy (history, metrics, access and audit logs on), not a hand-made approximation.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from reference import Reference

from assistantctl.renderers.engine import build_settings
from assistantctl.renderers.nginx import render as render_nginx
from assistantctl.schema.loader import load_spec
from assistantctl.targets import targets

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, process: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Stack:
    """Everything one bench run started; `close()` stops it all, newest first."""

    root: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}, cwd=cwd
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        while self.processes:
            stop(self.processes.pop())


def bench_spec(
    root: Path,
    workers: int,
    upstream: str,
    http_port: int,
    engine_port: int,
    *,
    source: Path = REPO / "assistant.yaml",
    tools_enabled: list[str] | None = None,
) -> Path:
    """assistant.yaml plus an OpenAI-compatible model `fake` on the fake upstream, limits opened up
    so that wrk measures the engine rather than the rate limit, and ports/root of this run.
    `source` is the spec to start from (a reference commit's own); `tools_enabled` replaces
    `tools.enabled` (`[]`: no tool is offered to the model, the path before the tool layer)."""
    data = yaml.safe_load(source.read_text())
    if tools_enabled is not None:
        data.setdefault("tools", {})["enabled"] = tools_enabled
    data["models"]["providers"]["local"]["max_concurrency"] = 100_000
    data["models"]["providers"]["fake"] = {
        "provider": "openai",
        "model": "fake",
        "api_base": f"{upstream}/v1",
        "max_concurrency": 100_000,
    }
    data.setdefault("limits", {})
    data["limits"]["rate_limit"] = {"requests_per_minute": 60_000_000, "burst": 1_000_000, "key": "user"}
    data["limits"]["concurrency"] = {"workers": workers, "max_in_flight": 100_000, "queue_size": 100_000}
    data["deploy"]["root"] = str(root)
    data["deploy"]["ports"] = {"http": http_port, "engine": engine_port}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "assistant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_engine(
    stack: Stack,
    spec_path: Path,
    reference: Reference | None = None,
    *,
    wrapper: tuple[str, ...] = (),
    startup_seconds: float = 20,
) -> tuple[subprocess.Popen, str]:
    """The engine of this checkout, or of `reference` (its own renderers build its settings);
    `wrapper` is a command that runs the engine's (valgrind in bench/instructions.py)."""
    (target,) = targets(load_spec(spec_path), spec_path.parent)
    path = Path(target.root) / "engine-settings.json"
    if reference is None:
        path.write_text(build_settings(target).to_json())
    else:
        reference.render_settings(spec_path, path)
    cmd = [*wrapper, sys.executable, "-m", "assistantctl.engine", "--settings", str(path)]
    if reference is None:
        process = stack.spawn(cmd)
    else:
        process = stack.spawn(cmd, env=reference.env, cwd=reference.cwd)
    url = f"http://127.0.0.1:{target.spec.deploy.ports.engine}"
    wait_up(f"{url}/health", process, startup_seconds)
    return process, url


def start_nginx(stack: Stack, spec_path: Path) -> str:
    """nginx from the rendered nginx.conf + site.conf, in the foreground under the run's root."""
    (target,) = targets(load_spec(spec_path), spec_path.parent)
    root = Path(target.root)
    folder = root / "nginx"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in render_nginx(target).items():
        (folder / name).write_text(text)
    for sub in ("logs", "run", "tmp/nginx"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = [binary, "-p", f"{folder}/", "-c", "nginx.conf", "-e", str(root / "logs" / "nginx-error.log")]
    process = stack.spawn(cmd)
    url = f"http://127.0.0.1:{target.spec.deploy.ports.http}"
    wait_up(f"{url}/health", process)
    return url


def start_bare(stack: Stack, upstream: str, workers: int) -> str:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "bench.bare_forwarder:create_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--loop", "uvloop"]
    cmd += ["--http", "httptools", "--no-access-log", "--log-level", "warning", "--backlog", "4096"]
    process = stack.spawn(cmd, env={"BARE_UPSTREAM": upstream}, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/", process)
    return url


def start_upstream(stack: Stack) -> str:
    port = free_port()
    process = stack.spawn([sys.executable, str(HERE / "fake_upstream.py"), str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/v1/models", process)
    return url


def wrk(url: str, body: dict[str, Any], duration: int, connections: int, scratch: Path) -> dict[str, float]:
    script = scratch / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    broken = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "errors": float(errors.group(1) if errors else 0) + sum(map(int, broken.groups() if broken else [])),
        "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def worker_pids(process: subprocess.Popen) -> list[int]:
    """uvicorn's worker processes: the spawned children, or the process itself with one worker."""
    workers = [pid for pid in children(process.pid) if "spawn_main" in _cmdline(pid)]
    return workers or [process.pid]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# The process groups a case's CPU time is charged to, in the order of the printed columns.
CPU_COLUMNS = ("app", "nginx", "upstream", "wrk")


def measured(
    label: str,
    url: str,
    body: dict[str, Any],
    groups: dict[str, list[int]],
    duration: int,
    connections: int,
    scratch: Path,
) -> dict[str, Any]:
    """One wrk run, printed as a row: req/s, latency, errors and CPU per request per process group."""
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    r = wrk(url, body, duration, connections, scratch)
    requests = max(r["requests"], 1)
    cpu = {name: (cpu_seconds(pids) - before[name]) / requests * 1e6 for name, pids in groups.items()}
    cpu["wrk"] = r["cpu_seconds"] / requests * 1e6
    r["cpu_us"], r["cpu"] = cpu["app"], cpu  # type: ignore[assignment]
    columns = " ".join(f"{cpu[name]:>5.0f}" if name in cpu else f"{'-':>5}" for name in CPU_COLUMNS)
    print(
        f"{label:<48} {r['rps']:>7.0f} {r['p50']:>6.2f} {r['p99']:>6.2f} {r['errors']:>6.0f}"
        f" {columns} {sum(cpu.values()):>5.0f}",
        flush=True,
    )
    return r


def memory(process: subprocess.Popen) -> list[float]:
    """RSS (MB) of each of the engine's (or the bare forwarder's) worker processes."""
    return [rss_mb(pid) for pid in worker_pids(process)]
