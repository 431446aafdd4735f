"""The engine's own cost of one tool step, measured in one run next to a plain chat.

    python bench/tool_loop.py [--duration 5] [--connections 16] [--workers 1]

Starts the engine from assistant.yaml (the builtin offline model, the default safe tools) and
drives POST /api/v1/chat with wrk twice: "hello there" (tools offered, none asked: the plain
path) and "what is 6*7?" (the builtin model asks for the calculator, the engine runs it, the
model answers "6*7 = 42": one tool step, two model calls, two more history rows). The CPU time
the engine's workers spent per request is the figure; the difference between the two cases is
what one tool step costs the engine (the calculator's own work included, ~tens of µs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from harness import Stack, bench_spec, cpu_seconds, free_port, load_average, start_engine, worker_pids, wrk

CASES = [
    ("plain", "POST /api/v1/chat, no tool asked", {"message": "hello there"}),
    ("tool", "POST /api/v1/chat, one calculator step", {"message": "what is 6*7?"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the cases this many times")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            run(stack, args)
        finally:
            stack.close()


def run(stack: Stack, args: argparse.Namespace) -> None:
    # The bench spec's fake upstream model is never called here: the builtin model answers.
    spec = bench_spec(stack.root / "engine-root", args.workers, "http://127.0.0.1:9", free_port(), free_port())
    engine, url = start_engine(stack, spec)
    time.sleep(1.0)
    pids = worker_pids(engine)
    print(f"workers={args.workers} connections={args.connections} cores={os.cpu_count()} loadavg={load_average()}")
    print(f"{'case':<42} {'req/s':>7} {'p50 ms':>7} {'CPU us/req':>10}")
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # alternating, so that load from elsewhere hits both cases alike
        for key, label, body in CASES:
            before = cpu_seconds(pids)
            r = wrk(f"{url}/api/v1/chat", body, args.duration, args.connections, stack.root)
            cpu_us = (cpu_seconds(pids) - before) / max(r["requests"], 1) * 1e6
            best[key] = min(best.get(key, cpu_us), cpu_us)
            print(f"{label:<42} {r['rps']:>7.0f} {r['p50']:>7.2f} {cpu_us:>10.0f}")
    print(f"engine overhead per tool step (best of each): {best['tool'] - best['plain']:.0f} us of CPU")
    print(f"loadavg after: {load_average()}")


if __name__ == "__main__":
    main()
