"""`call_tool`: one tool call from the model, validated, limited, counted, logged and audited.

Whatever goes wrong (an unknown or forbidden tool, arguments that are not JSON or do not fit the
tool's model, a tool that raises, hangs past `step_timeout_seconds` or answers more than
`output_limit_bytes`) ends as a `ToolResult` whose content is one sentence for the model: the
tool-calling loop never sees an exception from a tool (cancellation of the request aside).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from ..logs import audit, event
from ..metrics import child
from .base import Outcome, Tool, ToolContext, ToolError, ToolOutput, ToolResult
from .registry import Registry

LOG = logging.getLogger("engine.tools")
TOOL_CALLS = Counter("assistant_tool_calls_total", "Tool calls by outcome.", ["tool", "outcome"])
TOOL_DURATION = Histogram(
    "assistant_tool_call_duration_seconds",
    "Tool call latency.",
    ["tool"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
MAX_ARGUMENT_CHARS = 100_000
# Asked once the arguments are valid, before the tool runs: None lets it run, a sentence refuses it
# (engine/tools/approval.py: the user's approval). Its wait is not part of the tool's time limit.
Approve = Callable[[Tool, str | None], Awaitable[str | None]]


async def call_tool(
    registry: Registry, name: str, raw_arguments: str | None, context: ToolContext, approve: Approve | None = None
) -> ToolResult:
    """Run tool `name` with the model's JSON `raw_arguments` for the caller in `context`; with
    `approve`, only when it lets the call run (else the outcome is "denied")."""
    started = time.perf_counter()
    tool = registry.get(name)
    if tool is None or not registry.allowed(name, context.channel, context.user):
        offered = ", ".join(t["function"]["name"] for t in registry.definitions(context.channel, context.user))
        outcome: Outcome = "unknown_tool" if tool is None else "denied"
        text = f"there is no tool '{name}' here; available: {offered or 'none'}"
        return _finish(tool, context, outcome, text, False, started)
    outcome, text, tainted = await _run(registry, tool, raw_arguments, context, approve)
    return _finish(tool, context, outcome, text, tainted, started)


async def _run(
    registry: Registry, tool: Tool, raw: str | None, context: ToolContext, approve: Approve | None
) -> tuple[Outcome, str, bool]:
    try:
        args = tool.args.model_validate(_parse(raw))
    except (ValueError, ValidationError) as exc:
        return "invalid_arguments", f"invalid arguments for '{tool.name}': {_explain(exc)}", False
    if approve is not None and (refusal := await approve(tool, raw)) is not None:
        return "denied", refusal, False
    limit = min(registry.settings.step_timeout_seconds, tool.timeout_seconds or registry.settings.step_timeout_seconds)
    try:
        async with asyncio.timeout(limit) as deadline:
            output = await tool.run(args, context)
    except ToolError as exc:
        return "error", f"'{tool.name}' failed: {exc}", exc.tainted
    except TimeoutError:
        if deadline.expired():
            return "timeout", f"'{tool.name}' did not finish within {limit:g} seconds", False
        return "error", f"'{tool.name}' failed: it timed out", False
    except Exception:  # noqa: BLE001 - a tool's bug becomes an error the model can read, never a 500
        LOG.exception("tool %s raised", tool.name, extra={"fields": {"request_id": context.request_id}})
        return "error", f"'{tool.name}' failed with an internal error", False
    if not isinstance(output, ToolOutput):
        output = ToolOutput(str(output))
    size, cap = len(output.text.encode("utf-8", "replace")), registry.settings.output_limit_bytes
    if size > cap:
        return "too_large", f"'{tool.name}' answered {size} bytes, more than the limit of {cap}", output.tainted
    return "ok", output.text, output.tainted


def _parse(raw: str | None) -> dict:
    if raw is None or not raw.strip():
        return {}
    if len(raw) > MAX_ARGUMENT_CHARS:
        raise ValueError(f"the arguments are longer than {MAX_ARGUMENT_CHARS} characters")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the arguments are not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError("the arguments must be a JSON object")
    return value


def _explain(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _finish(
    tool: Tool | None,
    context: ToolContext,
    outcome: Outcome,
    text: str,
    tainted: bool,
    started: float,
) -> ToolResult:
    duration = time.perf_counter() - started
    # A name the model made up is counted as "unknown": label values must not come from a model.
    label = tool.name if tool is not None else "unknown"
    child(TOOL_CALLS, label, outcome).inc()
    child(TOOL_DURATION, label).observe(duration)
    fields = {
        "request_id": context.request_id,
        "user": context.user,
        "channel": context.channel,
        "tool": label,
        "risk": tool.risk if tool is not None else "-",
        "outcome": outcome,
        "tainted": tainted,
    }
    level = logging.INFO if outcome == "ok" else logging.WARNING
    event(LOG, level, "" if outcome == "ok" else text, **fields, duration_ms=round(duration * 1000))
    audit("tool_call", **fields)
    return ToolResult(label, outcome, text if outcome == "ok" else f"error: {text}", tainted, duration)
