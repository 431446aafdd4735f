"""What a limits decision costs in each bucket store, as the engine's workers would pay it.

    python bench/limits.py [--decisions 20000] [--redis]

One decision is what a chat request takes at admission with every limit on: the user's bucket,
the global one, the model's requests and tokens, and the daily budget (engine/limits/policy.py
`admission`). For each store it prints, per worker process:
- `one at a time`: the latency of a lone decision (await apply, nothing else running);
- `64 at once`: the decisions per second when 64 requests ask together (the SQLite store then
  settles a batch per transaction), and the mean wait per decision;
with 1 worker, then 2 worker processes hammering the same store together (a node's two workers).
`--redis` also starts a throwaway redis-server on loopback (it must be installed).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import uvloop

from assistantctl.engine.limits.buckets import Buckets, MemoryBuckets
from assistantctl.engine.limits.buckets_redis import RedisRateLimiter
from assistantctl.engine.limits.buckets_sqlite import SqliteBuckets
from assistantctl.engine.limits.policy import admission
from assistantctl.engine.settings import EngineSettings, GlobalRateLimitSettings, ModelSettings, RateLimitSettings

MODEL = ModelSettings(name="m", provider="builtin", model="m", requests_per_minute=10**9, tokens_per_minute=10**9)
SETTINGS = EngineSettings(
    name="bench",
    listen_host="127.0.0.1",
    listen_port=1,
    workers=2,
    data_dir="/nonexistent",
    log_dir="/nonexistent",
    default_model="m",
    models=[MODEL],
    rate_limit=RateLimitSettings(requests_per_minute=10**9, burst=10**6, key="user"),
    global_rate_limit=GlobalRateLimitSettings(requests_per_minute=10**9, burst=10**6),
    daily_tokens_per_user=10**9,
)


def _store(kind: str, where: str) -> Buckets:
    if kind == "memory":
        return MemoryBuckets()
    if kind == "sqlite":
        return SqliteBuckets(Path(where) / "limits.sqlite3")
    return RedisRateLimiter(where, "bench:", MemoryBuckets())


async def _measure(kind: str, where: str, decisions: int) -> tuple[float, float]:
    store = _store(kind, where)
    takes = [admission(SETTINGS, f"user-{i % 1000}", f"user-{i % 1000}", MODEL) for i in range(decisions)]
    await store.apply(takes[0])  # open the file or the connection
    started = time.perf_counter()
    for t in takes[: decisions // 4]:
        await store.apply(t)
    lone = (time.perf_counter() - started) / (decisions // 4)
    queue = iter(takes)

    async def client() -> None:
        for t in queue:
            await store.apply(t)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(64)))
    rate = decisions / (time.perf_counter() - started)
    await store.aclose()
    return lone, rate


def _worker(kind: str, where: str, decisions: int, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    out.put(uvloop.run(_measure(kind, where, decisions)))  # type: ignore[attr-defined]


def run(kind: str, where: str, workers: int, decisions: int) -> None:
    if kind == "memory" and workers > 1:
        return  # memory is per process: the engine never shares it between workers
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, where, decisions, barrier, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    lone = sum(r[0] for r in results) / len(results)
    rate = sum(r[1] for r in results)
    print(
        f"{kind:7} {workers} worker(s)  one at a time: {lone * 1e6:7.1f} µs/decision   "
        f"64 at once: {rate:9,.0f} decisions/s in all ({workers * 1e6 / rate:6.1f} µs each per worker)"
    )


def _redis() -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("--redis needs redis-server (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=20_000, help="per worker and case")
    parser.add_argument("--redis", action="store_true", help="also measure Redis (starts redis-server)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (the figures depend on what else runs)")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            run("memory", tmp, workers, args.decisions)
            run("sqlite", tmp, workers, args.decisions)
        if args.redis:
            process, url = _redis()
            try:
                for workers in (1, 2):
                    run("redis", url, workers, args.decisions)
            finally:
                process.terminate()
                process.wait()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
