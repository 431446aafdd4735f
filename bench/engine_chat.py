"""Throughput of the engine under wrk, alone, behind the rendered nginx, and next to a bare forwarder.

    python bench/engine_chat.py [--workers 2] [--duration 5] [--connections 64] [--skip-nginx]

One run starts an instant fake OpenAI upstream (bench/fake_upstream.py), the engine with the
settings the renderers build from assistant.yaml plus a `fake` model on that upstream (history,
metrics and logs on, as deployed), nginx from the rendered config, and the ~50-line bare
forwarder (bench/bare_forwarder.py). It prints req/s, p50 and p99 per case, the engine/bare
ratios (of req/s and of CPU per request), idle and loaded RSS per uvicorn worker, and the
issue's targets next to the figures.
With the builtin model's one calculator step next to its plain answer, it prints the engine's own
CPU per tool step. With --reference (by default cfd51f0^, the commit before the tool layer), the
same run also starts that commit's engine (bench/reference.py) and this engine with
`tools.enabled: []`, each behind its own nginx, and drives POST /api/v1/chat on the three, the
rounds interleaved: "tools off" against the reference is the same work as before (issue 13's
budget: within 5%), "tools on" against "tools off" is the cost of offering the tool definitions
to the model (the engine encodes and sends them, the upstream decodes them on the same cores).
The CPU columns are the CPU time each process group spent per answered request: the serving
workers (engine or bare: `app`), nginx, the fake upstream and wrk itself; `all` is their sum.
They depend far less than req/s on whatever else the machine runs, so compare changes with them.
Everything shares the machine's cores, so req/s is roughly cores / `all`: figures are relative
to this machine and to whatever else runs on it (the load average is printed before and after).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from compare import DEFAULT_REFERENCE, compare, start_compared
from harness import (
    Stack,
    bench_spec,
    children,
    free_port,
    load_average,
    measured,
    memory,
    start_bare,
    start_engine,
    start_nginx,
    start_upstream,
    worker_pids,
)

CHAT = {"message": "hello there, how are you today?"}  # no credentials: the anonymous user, on loopback
CHAT_FAKE = {**CHAT, "model": "fake"}
CHAT_TOOL = {"message": "what is 6*7?"}  # the builtin model calls the calculator, then answers
COMPLETION = {"messages": [{"role": "user", "content": "hello there, how are you today?"}]}
UPSTREAM = {**COMPLETION, "model": "fake"}
UPSTREAM_SSE = {**UPSTREAM, "stream": True}
COMPLETIONS = "/v1/chat/completions"
# (key, label, target url key, path, body)
CASES = [
    ("builtin_chat", "engine   builtin POST /api/v1/chat (history)", "engine", "/api/v1/chat", CHAT),
    ("builtin_tool", "engine   builtin POST /api/v1/chat, 1 tool step", "engine", "/api/v1/chat", CHAT_TOOL),
    ("builtin_completion", "engine   builtin POST /v1/chat/completions", "engine", "/v1/chat/completions", COMPLETION),
    ("engine", "engine   upstream POST /v1/chat/completions", "engine", "/v1/chat/completions", UPSTREAM),
    ("engine_sse", "engine   upstream SSE  /v1/chat/completions", "engine", "/v1/chat/completions", UPSTREAM_SSE),
    ("engine_chat", "engine   upstream POST /api/v1/chat (history)", "engine", "/api/v1/chat", CHAT_FAKE),
    ("nginx", "nginx -> engine  POST /v1/chat/completions", "nginx", "/v1/chat/completions", UPSTREAM),
    ("nginx_sse", "nginx -> engine  SSE  /v1/chat/completions", "nginx", "/v1/chat/completions", UPSTREAM_SSE),
    ("nginx_chat", "nginx -> engine  POST /api/v1/chat (history)", "nginx", "/api/v1/chat", CHAT_FAKE),
    ("bare", "bare              POST /v1/chat/completions", "bare", "/v1/chat/completions", UPSTREAM),
    ("bare_sse", "bare              SSE  /v1/chat/completions", "bare", "/v1/chat/completions", UPSTREAM_SSE),
    ("nginx_bare", "nginx -> bare    POST /v1/chat/completions", "nginx_bare", "/v1/chat/completions", UPSTREAM),
    ("nginx_bare_sse", "nginx -> bare    SSE  /v1/chat/completions", "nginx_bare", COMPLETIONS, UPSTREAM_SSE),
]
SETTLE_SECONDS = 2.0


def start_all(stack: Stack, workers: int, with_nginx: bool) -> dict[str, object]:
    upstream = start_upstream(stack)
    spec = bench_spec(stack.root / "engine-root", workers, upstream, free_port(), free_port())
    engine, urls = start_engine(stack, spec)
    bare_url = start_bare(stack, upstream, workers)
    found: dict[str, object] = {"engine": urls, "bare": bare_url, "engine_process": engine, "upstream": upstream}
    found["bare_process"] = stack.processes[-1]
    found["upstream_process"] = stack.processes[0]
    if with_nginx:
        found["nginx"] = start_nginx(stack, spec)
        found["nginx_process"] = stack.processes[-1]
        bare_port = int(bare_url.rsplit(":", 1)[1])
        bare_spec = bench_spec(stack.root / "bare-root", workers, upstream, free_port(), bare_port)
        found["nginx_bare"] = start_nginx(stack, bare_spec)
        found["nginx_bare_process"] = stack.processes[-1]
    return found


def cpu_groups(urls: dict[str, object], where: str) -> dict[str, list[int]]:
    """The pids whose CPU time a case is charged with: serving workers, nginx, the upstream."""
    app = urls["bare_process" if "bare" in where else "engine_process"]
    groups = {"app": worker_pids(app), "upstream": [urls["upstream_process"].pid]}  # type: ignore[attr-defined]
    nginx = urls.get(f"{where}_process")
    if where.startswith("nginx") and nginx is not None:
        groups["nginx"] = [nginx.pid, *children(nginx.pid)]  # type: ignore[attr-defined]
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-nginx", action="store_true", help="only the engine and the bare forwarder")
    parser.add_argument("--only", help="comma-separated case keys, e.g. engine,bare (and `reference`)")
    parser.add_argument(
        "--reference", default=DEFAULT_REFERENCE, help="a commit to compare /api/v1/chat with ('' for none)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the reference comparison")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            run(stack, args, only)
        finally:
            stack.close()


def run(stack: Stack, args: argparse.Namespace, only: set[str] | None) -> None:
    urls = start_all(stack, args.workers, not args.skip_nginx)
    compared = None
    if args.reference and (not only or "reference" in only):
        upstream, upstream_pid = str(urls["upstream"]), urls["upstream_process"].pid  # type: ignore[attr-defined]
        compared = start_compared(stack, args.reference, args.workers, upstream, upstream_pid, not args.skip_nginx)
    time.sleep(SETTLE_SECONDS)
    if compared is not None:
        for engine in compared.engines:
            engine.idle = memory(engine.process)
    idle_engine, idle_bare = memory(urls["engine_process"]), memory(urls["bare_process"])
    print(
        f"workers={args.workers} connections={args.connections} duration={args.duration}s "
        f"cores={os.cpu_count()} loadavg={load_average()}"
    )
    print(f"{'':<76} {'CPU us per request':^29}")
    print(
        f"{'case':<48} {'req/s':>7} {'p50 ms':>6} {'p99 ms':>6} {'errors':>6}"
        f" {'app':>5} {'nginx':>5} {'upstr':>5} {'wrk':>5} {'all':>5}"
    )
    results: dict[str, dict[str, float]] = {}
    for key, label, where, path, body in CASES:
        if where not in urls or (only and key not in only):
            continue
        groups = cpu_groups(urls, where)
        url = str(urls[where]) + path
        results[key] = measured(label, url, body, groups, args.duration, args.connections, stack.root)
    loaded_engine = memory(urls["engine_process"])
    print(f"loadavg after: {load_average()}")
    if "builtin_chat" in results and "builtin_tool" in results:
        step = results["builtin_tool"]["cpu_us"] - results["builtin_chat"]["cpu_us"]
        print(f"engine overhead per tool step (builtin model, calculator): {step:.0f} us of CPU")
    print()
    # req/s says how the cases shared a busy machine; CPU per request is the steadier comparison.
    print(f"{'ratio':<40} {'req/s':>6} {'cpu/req':>8}  (engine's share of bare's throughput, and its CPU per request)")
    for num, den, label in (
        ("engine", "bare", "engine / bare, POST"),
        ("engine_sse", "bare_sse", "engine / bare, SSE"),
        ("nginx", "nginx_bare", "nginx->engine / nginx->bare, POST"),
        ("nginx_sse", "nginx_bare_sse", "nginx->engine / nginx->bare, SSE"),
        ("nginx", "bare", "nginx->engine / bare (direct), POST"),
    ):
        if num in results and den in results:
            rps = results[num]["rps"] / results[den]["rps"]
            cpu = results[num]["cpu_us"] / max(results[den]["cpu_us"], 1e-9)
            print(f"{label:<40} {rps:>6.0%} {cpu:>7.2f}x")
    print(f"{'engine worker RSS idle (MB)':<40} {' '.join(f'{m:.1f}' for m in idle_engine)}")
    print(f"{'engine worker RSS after load (MB)':<40} {' '.join(f'{m:.1f}' for m in loaded_engine)}")
    print(f"{'bare worker RSS idle (MB)':<40} {' '.join(f'{m:.1f}' for m in idle_bare)}")
    if compared is not None:
        compare(compared, args, stack.root)
    targets(results, idle_engine, compared.budget if compared is not None else [])


def targets(results: dict[str, dict[str, float]], idle: list[float], budget: list[tuple[str, bool, str]]) -> None:
    """The issue's targets next to this run's figures."""
    print()
    checks = []
    if "nginx" in results:
        nginx = results["nginx"]
        checks.append(("nginx->engine chat >= 5,000 req/s", nginx["rps"] >= 5000, f"{nginx['rps']:.0f}"))
        checks.append(("nginx->engine chat p99 <= 25 ms", nginx["p99"] <= 25, f"{nginx['p99']:.1f} ms"))
        for den in ("bare", "nginx_bare"):
            if den in results:
                ratio = nginx["rps"] / results[den]["rps"]
                checks.append((f"nginx->engine >= 40% of {den}", ratio >= 0.4, f"{ratio:.0%}"))
    for key in ("nginx_sse", "engine_sse"):
        if key in results:
            checks.append((f"{key} >= 3,000 req/s", results[key]["rps"] >= 3000, f"{results[key]['rps']:.0f}"))
    checks.append(("idle RSS <= 80 MB per worker", max(idle) <= 80, f"max {max(idle):.1f} MB"))
    checks += budget
    for label, ok, figure in checks:
        print(f"target {label:<38} {'met' if ok else 'NOT met':>8}  ({figure})")


if __name__ == "__main__":
    main()
