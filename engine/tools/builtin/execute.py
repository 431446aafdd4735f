"""python and shell: run code or an allow-listed program in a sandbox over the caller's workspace
(risk class machine, off unless named; engine/tools/sandbox.py holds what the sandbox guarantees).

`shell` has no shell: the command line is split with shlex into an argv, so `;`, `|`, `&&`, `$(...)`,
backticks, globs and redirections are plain characters handed to the program as arguments. Its
first word must be a name of `tools.machine.shell_commands`, run as /usr/bin/<name>.
The model gets how the run ended (a limit hit is named in a sentence) and its output, cut to fit
the tools' output limit; a run that failed is a tool error the model reads, not a failed request.
"""

from __future__ import annotations

import os
import re
import shlex

from pydantic import Field, model_validator

from ..base import Arguments, ToolContext, ToolError
from ._machine import checked_path, machine_tool, report, sandboxed, workspace

_PROGRAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class PythonArgs(Arguments):
    code: str | None = Field(None, max_length=200_000, description="Python 3 source to run.")
    file: str | None = Field(None, max_length=1024, description="Or a .py file of the workspace to run.")
    args: list[str] = Field(default_factory=list, max_length=64, description="Arguments (sys.argv[1:]).")

    @model_validator(mode="after")
    def _code_or_file(self) -> PythonArgs:
        if (self.code is None) == (self.file is None):
            raise ValueError("give either code or file")
        return self


async def python(args: PythonArgs, context: ToolContext) -> str:
    folder = await workspace(context)
    if args.file is not None:
        relative = await checked_path(folder, args.file)
        argv, stdin = ["/usr/bin/python3", "-I", f"/workspace/{relative}", *args.args], b""
    else:
        # the code goes through stdin, not argv: no size limit of one argument, not in `ps`
        argv, stdin = ["/usr/bin/python3", "-I", "-", *args.args], (args.code or "").encode()
    result = await sandboxed(context, argv, stdin=stdin, folder=folder)
    return report(result, context.settings)


class ShellArgs(Arguments):
    command: str = Field(
        min_length=1, max_length=4000,
        description="One program and its arguments, e.g. `ls -la notes`; no pipes, no ;, no $(...).",
    )  # fmt: skip


def _argv(command: str, allowed: list[str]) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ToolError(f"the command cannot be split into words: {exc}") from None
    if not words:
        raise ToolError("the command is empty")
    program = words[0]
    if not _PROGRAM_NAME.match(program) or program not in allowed:
        raise ToolError(
            f"'{program}' is not an allowed program (there is no shell: ;, |, $(...) and redirections are not "
            f"interpreted); allowed: {', '.join(allowed) or 'none'}"
        )
    path = f"/usr/bin/{program}"
    if not os.path.isfile(path):  # the sandbox shows the host's /usr read-only: same files
        raise ToolError(f"'{program}' is allowed but not installed on this host")
    return [path, *words[1:]]


async def shell(args: ShellArgs, context: ToolContext) -> str:
    argv = _argv(args.command, context.settings.machine.shell_commands)
    result = await sandboxed(context, argv)
    return report(result, context.settings)


TOOLS = (
    machine_tool(
        "python",
        "Run Python 3 code (or a .py file of the workspace) in a sandbox: no network, the workspace at "
        "/workspace is the only writable place; limited time, memory and output. Print what you need.",
        PythonArgs,
        python,
    ),
    machine_tool(
        "shell",
        "Run one allow-listed program with arguments in the user's workspace sandbox (no shell features).",
        ShellArgs,
        shell,
    ),
)
