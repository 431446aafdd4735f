"""What the machine tools (workspace_*, python, shell) share: the caller's workspace, the sandbox's
limits from the settings, path checks on the host side, the text the model gets, and the audit.

Every machine tool is built with `machine_tool(...)`: each call, refused or run, writes one audit
line (engine.audit, action `machine_tool`) with the user, channel, tool, exit status, the limit
that ended it, the duration, and the arguments with credentials masked as the message (so the
log's PII masking applies to them too). The registry imports this module and finds no `TOOLS`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ...logs import AUDIT, event
from ...settings import ToolsSettings
from ..base import Arguments, Run, Tool, ToolContext, ToolError
from ..sandbox import SandboxError, SandboxLimits, SandboxResult, run_sandboxed, workspace_for

AUDITED_ARGUMENT_CHARS = 2000
# Credentials as they appear in code and commands: a value after a name that says what it is, and
# the shapes of well-known tokens. What matches becomes *** in the audit line.
_NAMED_SECRET = re.compile(
    r"(?i)((?:api[_-]?key|access[_-]?key|token|secret|passw(?:or)?d|passwd|authorization|bearer|cookie|"
    r"credential|private[_-]?key)[\"']?\s*(?:[:=]|\s)\s*[\"']?)([^\s\"',;]{4,})"
)
_TOKEN_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{8,}"
    r"|eyJ[\w-]{6,}\.[\w-]{6,}\.[\w-]{6,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
)


def mask_secrets(text: str) -> str:
    """`text` with credentials replaced by ***: named values (token=..., password: ...) and token
    shapes (sk-..., ghp_..., AKIA..., JWTs, PEM private keys)."""
    return _NAMED_SECRET.sub(lambda m: m.group(1) + "***", _TOKEN_SHAPES.sub("***", text))


def sandbox_limits(settings: ToolsSettings) -> SandboxLimits:
    """The sandbox limits of the settings; the wall clock ends a little before the tool call's own
    timeout, so the model reads "killed: the wall-clock limit" rather than a bare timeout."""
    machine = settings.machine
    return SandboxLimits(
        wall_seconds=min(machine.wall_seconds, max(1.0, settings.step_timeout_seconds - 2)),
        cpu_seconds=machine.cpu_seconds,
        memory_bytes=machine.memory_bytes,
        processes=machine.processes,
        file_bytes=machine.file_bytes,
        output_bytes=machine.output_bytes,
        workspace_quota_bytes=machine.workspace_quota_bytes,
    )


def workspaces_root(context: ToolContext) -> Path:
    return workspaces_of(context.settings, context.data_dir)


def workspaces_of(settings: ToolsSettings, data_dir: str | Path) -> Path:
    """The folder of every user's workspace: the settings' own, else beside the data folder."""
    configured = settings.machine.workspaces_dir
    return Path(configured) if configured else Path(data_dir).parent / "workspaces"


def _workspace(context: ToolContext) -> Path:
    root = workspaces_root(context)
    if not root.exists():
        root.mkdir(mode=0o711, parents=True, exist_ok=True)  # each sandbox uid passes through it
    return workspace_for(root, context.user)


async def workspace(context: ToolContext) -> Path:
    """The caller's workspace folder (made on first use), off the event loop."""
    return await asyncio.to_thread(_workspace, context)


def relative_path(path: str) -> PurePosixPath:
    """`path` as a path inside the workspace; ToolError for absolute paths, `..` and NUL."""
    if "\0" in path:
        raise ToolError("the path must not contain NUL characters")
    if path.startswith("/"):
        raise ToolError(f"'{path}' is an absolute path: give a path relative to the workspace")
    relative = PurePosixPath(path)
    if ".." in relative.parts:
        raise ToolError(f"'{path}' goes up with '..': paths stay inside the workspace")
    return relative


def _check_on_host(folder: Path, relative: PurePosixPath) -> None:
    # lstat only, one component at a time: a link is seen and refused, never followed
    current = folder
    for part in relative.parts:
        current = current / part
        try:
            info = current.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode):
            raise ToolError(f"'{current.relative_to(folder)}' is a symbolic link: links are not followed")
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            raise ToolError(f"'{current.relative_to(folder)}' is a hard link: hard links are refused")


async def checked_path(folder: Path, path: str) -> PurePosixPath:
    """`path` checked on the host before the sandbox checks it again: confined, no link on the way."""
    relative = relative_path(path)
    await asyncio.to_thread(_check_on_host, folder, relative)
    return relative


@dataclass
class _Call:
    result: SandboxResult | None = None


_CALL: contextvars.ContextVar[_Call] = contextvars.ContextVar("machine_tool_call")


async def sandboxed(
    context: ToolContext, argv: Sequence[str], *, stdin: bytes = b"", folder: Path | None = None
) -> SandboxResult:
    """Run `argv` in a sandbox over the caller's workspace; SandboxError becomes a ToolError."""
    folder = folder or await workspace(context)
    try:
        result = await run_sandboxed(argv, workspace=folder, limits=sandbox_limits(context.settings), stdin=stdin)
    except SandboxError as exc:
        raise ToolError(str(exc)) from None
    call = _CALL.get(None)
    if call is not None:
        call.result = result
    return result


def _cut(data: bytes, budget: int) -> str:
    text = data[:budget].decode("utf-8", "replace")
    return text + (f"\n[... {len(data) - budget} more bytes cut]" if len(data) > budget else "")


def report(result: SandboxResult, settings: ToolsSettings) -> str:
    """The run's text for the model: how it ended (a limit named in a sentence), then its output,
    cut to fit the tools' output limit. Raises ToolError with that text when the run failed."""
    head = f"Sandboxed run: {result.describe(sandbox_limits(settings))}."
    if result.truncated:
        head += " Its output was cut at the sandbox's output limit."
    budget = max(128, settings.output_limit_bytes - len(head) - 200)
    streams = [(label, data) for label, data in (("stdout", result.stdout), ("stderr", result.stderr)) if data]
    parts = [head]
    for label, data in streams:
        parts.append(f"{label}:\n{_cut(data, budget // len(streams))}")
    text = "\n".join(parts)
    if not result.ok:
        raise ToolError(text)
    return text


def machine_tool(name: str, description: str, args: type[Arguments], run: Run) -> Tool:
    """A Tool of risk class machine whose every call is audited (see the module's docstring)."""

    async def audited(arguments: Arguments, context: ToolContext) -> str:
        call = _Call()
        token = _CALL.set(call)
        started, outcome = time.monotonic(), "cancelled"
        try:
            text = await run(arguments, context)
            outcome = "ok"
            return text  # type: ignore[return-value]
        except ToolError:
            outcome = "error"
            raise
        except Exception:
            outcome = "internal_error"
            raise
        finally:
            _CALL.reset(token)
            _audit(name, arguments, context, outcome, call.result, time.monotonic() - started)

    return Tool(name, description, args, audited, risk="machine")


def _audit(
    name: str, arguments: Arguments, context: ToolContext, outcome: str, result: SandboxResult | None,
    duration: float,
) -> None:  # fmt: skip
    shown = json.dumps(arguments.model_dump(), ensure_ascii=False)
    if len(shown) > AUDITED_ARGUMENT_CHARS:
        shown = shown[:AUDITED_ARGUMENT_CHARS] + f"... ({len(shown)} characters)"
    event(
        AUDIT,
        logging.INFO,
        mask_secrets(shown),
        action="machine_tool",
        request_id=context.request_id,
        user=context.user,
        channel=context.channel,
        tool=name,
        outcome=outcome,
        exit_code=result.exit_code if result else None,
        limit=result.limit if result else None,
        duration_ms=round(duration * 1000),
        sandbox="run" if result else "not run",
    )
