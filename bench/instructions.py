"""Instructions per request (valgrind's callgrind) of an older commit's engine and of this one.

    python bench/instructions.py [--reference cfd51f0^] [--requests 300] [--batches 3]

CPU time per request moves ±15% between runs on a shared 2-core machine (bench/compare.py prints
every round to show it), which is three times issue 13's budget of 5%. The number of instructions
a worker executes for the same requests does not depend on what else runs: this script counts
them. It starts the fake upstream, then one engine at a time under callgrind (one worker,
`--trace-children` follows uvicorn's spawned worker): the reference commit's (bench/reference.py),
this engine with `tools.enabled: []` (the same work as before the tool layer) and this engine as
configured (15 tool definitions offered with every model request). After a warm-up, each batch
zeroes the worker's counters (`callgrind_control -z`), sends POST /api/v1/chat `--requests` times
over one keep-alive connection, one at a time, and dumps them (`-d`): every instruction of the
worker's threads (the event loop, SQLite's and the history writer's) between the two.

Instructions are work, not time: cache misses, system calls and the other processes' share of the
cores are not in them (bench/engine_chat.py measures those). Under callgrind a request takes ~25 ms,
so a batch of 300 takes ~8 s and the whole run ~3.5 minutes, most of it three engines starting.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from compare import BUDGET, CHAT_FAKE, DEFAULT_REFERENCE, compared_specs
from harness import Stack, start_engine, start_upstream, stop, worker_pids
from reference import Reference

WARM_UP_REQUESTS = 50
STARTUP_SECONDS = 300  # imports run ~50 times slower under callgrind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="the commit to compare with")
    parser.add_argument("--requests", type=int, default=300, help="requests per batch")
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench/instructions.py needs valgrind (apt install valgrind)")
    root = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    stack = Stack(root)
    try:
        upstream = start_upstream(stack)
        reference = Reference.prepare(args.reference, root / "reference")
        print(f"reference {reference.rev} = {reference.commit}; POST /api/v1/chat, model fake, one worker,")
        print(f"{args.batches} batches of {args.requests} requests after {WARM_UP_REQUESTS} to warm up")
        counted: dict[str, list[float]] = {}
        for key, label, ref, spec in compared_specs(root, reference, 1, upstream):
            counted[key] = _count(stack, spec, ref, root / f"callgrind-{key}", args)
            per_batch = " ".join(f"{n:,.0f}" for n in counted[key])
            print(f"{label:<22} instructions per request: {per_batch}", flush=True)
        _summary(counted)
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)


def _count(
    stack: Stack, spec_path: Path, reference: Reference | None, out: Path, args: argparse.Namespace
) -> list[float]:
    """Start the engine of `spec_path` under callgrind, then count each batch's instructions per request."""
    out.mkdir()
    valgrind = ("valgrind", "--tool=callgrind", "--trace-children=yes", "-q", f"--callgrind-out-file={out}/%p")
    process, url = start_engine(stack, spec_path, reference, wrapper=valgrind, startup_seconds=STARTUP_SECONDS)
    (worker,) = worker_pids(process)
    per_request = []
    with httpx.Client(base_url=url, timeout=60) as client:
        _send(client, WARM_UP_REQUESTS)
        for _ in range(args.batches):
            _control("-z", worker)
            _send(client, args.requests)
            before = set(out.iterdir())
            _control("-d", worker)
            per_request.append(_instructions(_new_dump(out, before)) / args.requests)
    stack.processes.remove(process)
    stop(process)  # one engine under callgrind at a time
    return per_request


def _send(client: httpx.Client, count: int) -> None:
    for _ in range(count):
        response = client.post("/api/v1/chat", json=CHAT_FAKE)
        response.raise_for_status()


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def _new_dump(folder: Path, before: set[Path]) -> Path:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if new := set(folder.iterdir()) - before:
            (dump,) = new
            return dump
        time.sleep(0.05)
    raise RuntimeError(f"callgrind wrote no dump into {folder}")


def _instructions(dump: Path) -> int:
    """The dump's `summary:` line: instructions executed since the counters were zeroed."""
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"{dump} has no summary line")


def _summary(counted: dict[str, list[float]]) -> None:
    median = {key: statistics.median(values) for key, values in counted.items()}
    spread = {key: (max(values) - min(values)) / median[key] for key, values in counted.items()}
    same = median["off"] / median["ref"]
    print(f"spread between batches: {', '.join(f'{k} {v:.1%}' for k, v in spread.items())}")
    print(f"same work (tools off / ref): {same:.3f}x ({median['off'] - median['ref']:+,.0f} instructions per request)")
    print(
        f"tool definitions (tools on / tools off): {median['on'] / median['off']:.3f}x "
        f"({median['on'] - median['off']:+,.0f} instructions per request)"
    )
    verdict = "met" if same <= BUDGET else "NOT met"
    print(f"target same-work instructions per request <= {BUDGET:.0%} of ref  {verdict}  ({same:.1%})")


if __name__ == "__main__":
    main()
