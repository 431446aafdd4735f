"""How long compiling a spec takes: load + validate, render every target, and the CLI's start-up.

    python bench/render.py [--spec assistant.yaml] [--rounds 200]

Prints the mean and best time per phase. The CLI start-up runs `assistantctl validate` as a
subprocess next to `python -c pass`, the floor any Python command pays on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from assistantctl.bundle import build_bundle
from assistantctl.schema.loader import load_spec
from assistantctl.targets import targets

REPO = Path(__file__).resolve().parents[1]


def timed(action: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def report(label: str, samples: list[float]) -> None:
    print(f"{label:<34} mean {statistics.mean(samples) * 1000:8.2f} ms   best {min(samples) * 1000:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default=str(REPO / "assistant.yaml"))
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    spec_path = Path(args.spec).resolve()
    spec = load_spec(spec_path)
    hosts = targets(spec, spec_path.parent)
    files = sum(len(build_bundle(t).files) for t in hosts)
    print(f"spec {spec_path.name}: {len(hosts)} host(s), {files} rendered file(s), {args.rounds} rounds")
    report("load + validate", timed(lambda: load_spec(spec_path), args.rounds))
    report("render every target (all hosts)", timed(lambda: [build_bundle(t) for t in hosts], args.rounds))
    report(
        "bundle tarball (all hosts)",
        timed(lambda: [build_bundle(t).tarball() for t in hosts], max(args.rounds // 4, 1)),
    )
    cli = str(Path(sys.executable).with_name("assistantctl"))
    floor = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 10)
    validate = timed(
        lambda: subprocess.run([cli, "-f", str(spec_path), "validate"], check=True, capture_output=True), 10
    )
    report("python -c pass (floor)", floor)
    report("assistantctl validate (process)", validate)
    print(f"CLI start-up over the floor: {statistics.mean(validate) / statistics.mean(floor):.1f}x")


if __name__ == "__main__":
    main()
