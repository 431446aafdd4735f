"""Throughput of the engine under wrk: builtin model, and forwarding to an instant fake upstream.

    python bench/engine_chat.py [--duration 5] [--connections 64] [--workers 1]

Starts bench/fake_upstream.py and the engine (`python -m assistantctl.engine`) on loopback, runs
`wrk` with a Lua script that POSTs JSON, and prints req/s, p50 and p99 for each case. Forwarding
cases run twice: with the default aiohttp transport and with plain httpx, to show the difference.
Engine, upstream and wrk share the machine's cores, so figures are relative, not absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from assistantctl.engine.settings import EngineSettings, ModelSettings, RateLimitSettings

HERE = Path(__file__).resolve().parent
CHAT = {"message": "hello there, how are you today?", "user": "bench"}
COMPLETION = {"messages": [{"role": "user", "content": "hello there, how are you today?"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def start_engine(root: Path, workers: int, upstream: str, transport: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    settings = EngineSettings(
        name="bench",
        listen_host="127.0.0.1",
        listen_port=port,
        workers=workers,
        data_dir=str(root / "data"),
        log_dir=str(root / "logs"),
        default_model="local",
        models=[
            ModelSettings(name="local", provider="builtin", model="local"),
            ModelSettings(name="fake", provider="openai", model="fake", api_base=f"{upstream}/v1"),
        ],
        rate_limit=RateLimitSettings(requests_per_minute=10**9, burst=10**9, key="user"),
        max_in_flight=100_000,
        queue_size=100_000,
    )
    path = root / "settings.json"
    path.write_text(settings.to_json())
    env = {**os.environ, "ASSISTANT_ENGINE_HTTP_TRANSPORT": transport}
    process = subprocess.Popen(
        [sys.executable, "-m", "assistantctl.engine", "--settings", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/health")
    return process, url


def wrk(url: str, body: dict, duration: int, connections: int, root: Path) -> dict[str, float]:
    script = root / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": _ms(re.search(r"50%\s+(\S+)", out).group(1)),
        "p99": _ms(re.search(r"99%\s+(\S+)", out).group(1)),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    upstream_port = free_port()
    fake = subprocess.Popen([sys.executable, str(HERE / "fake_upstream.py"), str(upstream_port)])
    upstream = f"http://127.0.0.1:{upstream_port}"
    cases = [
        ("aiohttp", "builtin  POST /api/v1/chat (history write)", "/api/v1/chat", CHAT),
        ("aiohttp", "builtin  POST /v1/chat/completions", "/v1/chat/completions", COMPLETION),
        (
            "aiohttp",
            "upstream POST /v1/chat/completions [aiohttp]",
            "/v1/chat/completions",
            {**COMPLETION, "model": "fake"},
        ),
        (
            "aiohttp",
            "upstream SSE  /v1/chat/completions [aiohttp]",
            "/v1/chat/completions",
            {**COMPLETION, "model": "fake", "stream": True},
        ),
        ("aiohttp", "upstream POST /api/v1/chat [aiohttp]", "/api/v1/chat", {**CHAT, "model": "fake"}),
        (
            "httpx",
            "upstream POST /v1/chat/completions [httpx]",
            "/v1/chat/completions",
            {**COMPLETION, "model": "fake"},
        ),
        (
            "httpx",
            "upstream SSE  /v1/chat/completions [httpx]",
            "/v1/chat/completions",
            {**COMPLETION, "model": "fake", "stream": True},
        ),
    ]
    try:
        wait_up(f"{upstream}/v1/models")
        print(f"workers={args.workers} connections={args.connections} duration={args.duration}s cores={os.cpu_count()}")
        print(f"{'case':<48} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for transport in ("aiohttp", "httpx"):
            with tempfile.TemporaryDirectory() as tmp:
                engine, url = start_engine(Path(tmp), args.workers, upstream, transport)
                try:
                    for case_transport, label, path, body in cases:
                        if case_transport != transport:
                            continue
                        r = wrk(url + path, body, args.duration, args.connections, Path(tmp))
                        print(
                            f"{label:<48} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8.0f}",
                            flush=True,
                        )
                finally:
                    stop(engine)
    finally:
        stop(fake)


if __name__ == "__main__":
    main()
