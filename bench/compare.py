"""bench/engine_chat.py's reference comparison: POST /api/v1/chat on an older commit's engine, on
this engine with no tool offered and on this engine as configured, in one run, rounds interleaved.

"tools off" against the reference is the same work as before the tool layer: issue 13's budget
is that it costs at most 5% more (CPU per request of the serving workers). "tools on" against
"tools off" is what offering the tool definitions costs: the engine encodes and sends them with
every model request, the upstream decodes them (here on the same cores, so it shows in req/s).
CPU figures are the best (lowest) of the rounds, req/s the best (highest): what each engine does
when the rest of the machine disturbs it least; every round's row is printed above them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    REPO,
    Stack,
    bench_spec,
    children,
    free_port,
    load_average,
    measured,
    start_engine,
    start_nginx,
    worker_pids,
)
from reference import Reference

DEFAULT_REFERENCE = "cfd51f0^"  # the commit before the tool layer (issue 13)
BUDGET = 1.05
CHAT_FAKE = {"message": "hello there, how are you today?", "model": "fake"}
VIAS = (("engine", "engine  "), ("nginx", "nginx ->"))


@dataclass
class Engine:
    """One engine of the comparison and the nginx in front of it (None with --skip-nginx)."""

    key: str
    label: str
    process: subprocess.Popen
    url: str
    nginx: str | None
    nginx_process: subprocess.Popen | None
    idle: list[float] = field(default_factory=list)


@dataclass
class Compared:
    reference: Reference
    engines: list[Engine]
    upstream_pid: int
    budget: list[tuple[str, bool, str]] = field(default_factory=list)


def compared_specs(
    root: Path, reference: Reference, workers: int, upstream: str
) -> Iterator[tuple[str, str, Reference | None, Path]]:
    """(key, label, the reference or None for this checkout, spec path) of the three engines a
    comparison runs: the reference's, this engine with no tool offered, this engine as configured."""
    for key, label, ref, tools in (
        ("ref", f"ref {reference.commit}", reference, None),
        ("off", "now, tools off", None, []),
        ("on", "now, tools on", None, None),
    ):
        source = (reference.tree if ref else REPO) / "assistant.yaml"
        spec = bench_spec(
            root / f"{key}-root", workers, upstream, free_port(), free_port(), source=source, tools_enabled=tools
        )
        yield key, label, ref, spec


def start_compared(
    stack: Stack, rev: str, workers: int, upstream: str, upstream_pid: int, with_nginx: bool
) -> Compared:
    """The reference's engine, this engine with tools off and this engine with the tools as
    configured, each fresh (not the bench's own engine: a history that already holds the main
    cases' rows makes every insert dearer) and behind its own nginx."""
    reference = Reference.prepare(rev, stack.root / "reference")
    started = []
    for key, label, ref, spec in compared_specs(stack.root, reference, workers, upstream):
        process, url = start_engine(stack, spec, ref)
        nginx = start_nginx(stack, spec) if with_nginx else None
        started.append(Engine(key, label, process, url, nginx, stack.processes[-1] if with_nginx else None))
    return Compared(reference, started, upstream_pid)


def compare(compared: Compared, args: argparse.Namespace, scratch: Path) -> None:
    """Drive POST /api/v1/chat on the three engines, print every round and the comparison."""
    ref = compared.reference
    repaired = " (engine/settings.py's missing tail restored, see bench/reference.py)" if ref.repaired else ""
    offered = _offered()
    print()
    print(f"reference {ref.rev} = {ref.commit}{repaired}: POST /api/v1/chat, model fake, {args.rounds} rounds, rotated")
    if offered:
        print(f"tools on: {offered[0]} tool definitions offered with every model request, {offered[1]:,} bytes of JSON")
    print(f"loadavg={load_average()}")
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    engines = compared.engines
    # Interleaved, so that load from elsewhere falls on every engine alike, and each round starts
    # with the next engine, so that none is always the first after a pause or the last of a series.
    for round_ in range(args.rounds):
        turn = engines[round_ % len(engines) :] + engines[: round_ % len(engines)]
        for via, via_label in VIAS:
            for engine in turn:
                url = engine.url if via == "engine" else engine.nginx
                if url is None:
                    continue
                groups = {"app": worker_pids(engine.process), "upstream": [compared.upstream_pid]}
                if via == "nginx" and engine.nginx_process is not None:
                    groups["nginx"] = [engine.nginx_process.pid, *children(engine.nginx_process.pid)]
                label = f"{via_label} {engine.label:<17} POST /api/v1/chat"
                r = measured(label, url + "/api/v1/chat", CHAT_FAKE, groups, args.duration, args.connections, scratch)
                rows.setdefault((via, engine.key), []).append(r)
    print(f"loadavg after: {load_average()}")
    _summary(compared, rows)


def _best(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "app": min(r["cpu"]["app"] for r in runs),
        "upstream": min(r["cpu"]["upstream"] for r in runs),
        "all": min(sum(r["cpu"].values()) for r in runs),
        "rps": max(r["rps"] for r in runs),
    }


def _summary(compared: Compared, rows: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    print(f"{'best of the rounds':<40} {'app us':>7} {'upstr us':>8} {'all us':>7} {'req/s':>7}")
    best = {key: _best(runs) for key, runs in rows.items()}
    for (via, key), b in best.items():
        print(f"{via + ' ' + key:<40} {b['app']:>7.0f} {b['upstream']:>8.0f} {b['all']:>7.0f} {b['rps']:>7.0f}")
    for via, _ in VIAS:
        if (via, "ref") not in best:
            continue
        ref, off, on = best[(via, "ref")], best[(via, "off")], best[(via, "on")]
        same = off["app"] / ref["app"]
        print(
            f"{via}: same work (tools off / ref): app CPU {same:.2f}x ({off['app'] - ref['app']:+.0f} us), "
            f"all {off['all'] / ref['all']:.2f}x, req/s {off['rps'] / ref['rps']:.0%}"
        )
        print(
            f"{via}: tool definitions (tools on - tools off): app {on['app'] - off['app']:+.0f} us, "
            f"upstream {on['upstream'] - off['upstream']:+.0f} us, all {on['all'] - off['all']:+.0f} us, "
            f"req/s {on['rps'] / off['rps']:.0%}; tools on / ref: req/s {on['rps'] / ref['rps']:.0%}"
        )
        compared.budget.append(
            (f"{via} same-work /api/v1/chat CPU <= {BUDGET:.0%} of ref", same <= BUDGET, f"{same:.0%}")
        )
    for engine in compared.engines:
        print(f"{'worker RSS idle (MB), ' + engine.label:<40} {' '.join(f'{m:.1f}' for m in engine.idle)}")


def _offered() -> tuple[int, int] | None:
    """How many tool definitions the default settings offer and their size as the engine sends them."""
    try:
        from assistantctl.engine.settings import ToolsSettings  # noqa: PLC0415 - this checkout's engine
        from assistantctl.engine.tools import load_registry  # noqa: PLC0415
        from assistantctl.engine.tools.loop import offered  # noqa: PLC0415
    except ImportError:
        return None
    definitions = offered(load_registry(ToolsSettings()), "web", "anonymous")
    return len(definitions), len(json.dumps(definitions, separators=(",", ":"), ensure_ascii=False).encode())
