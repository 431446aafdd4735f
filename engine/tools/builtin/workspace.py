"""workspace_list, workspace_read, workspace_search, workspace_write, workspace_edit, workspace_patch:
the caller's own files, in their persistent workspace (risk class machine, off unless named).

Each call checks the path on the host (relative, no `..`, no link on the way, lstat only), then
does the file operation INSIDE a sandbox (engine/tools/sandbox.py) with a small standard-library
program (_workspace_ops.py) that walks the path again with openat(O_NOFOLLOW) from /workspace. So a
link or `..` is refused twice, and should both checks miss, the sandbox has nothing else to reach.
The user is the context's, never an argument: one user never names another's workspace.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from ..base import Arguments, ToolContext, ToolError
from ._machine import checked_path, machine_tool, sandbox_limits, sandboxed, workspace

_SCRIPT = (Path(__file__).parent / "_workspace_ops.py").read_text()
PathField = Field(max_length=1024, description="A path relative to the workspace, e.g. notes/todo.txt.")


async def _operate(context: ToolContext, request: dict, *paths: str) -> str:
    folder = await workspace(context)
    for path in paths:
        await checked_path(folder, path)
    budget = context.settings.output_limit_bytes - 200
    payload = json.dumps(request).encode()
    result = await sandboxed(context, ["/usr/bin/python3", "-I", "-c", _SCRIPT], stdin=payload, folder=folder)
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        ended = result.describe(sandbox_limits(context.settings))
        raise ToolError(f"the file operation {ended}: {result.stderr[-500:].decode('utf-8', 'replace')}") from None
    if not answer["ok"]:
        raise ToolError(answer["error"])
    text: str = answer["text"]
    if len(text.encode()) > budget:
        text = text.encode()[:budget].decode("utf-8", "ignore") + "\n[... cut]"
    return text


class ListArgs(Arguments):
    path: str = Field(".", max_length=1024, description="The folder to list, relative to the workspace.")
    recursive: bool = Field(False, description="Also list what the sub-folders hold.")


async def workspace_list(args: ListArgs, context: ToolContext) -> str:
    return await _operate(context, {"op": "list", "path": args.path, "recursive": args.recursive}, args.path)


class ReadArgs(Arguments):
    path: str = PathField
    offset: int = Field(0, ge=0, description="The byte to start at.")
    max_bytes: int = Field(12_000, ge=1, le=1_000_000, description="Bytes to read at most.")


async def workspace_read(args: ReadArgs, context: ToolContext) -> str:
    limit = min(args.max_bytes, context.settings.output_limit_bytes - 300)
    return await _operate(context, {"op": "read", "path": args.path, "offset": args.offset, "limit": limit}, args.path)


class SearchArgs(Arguments):
    text: str = Field(min_length=1, max_length=500, description="The text to look for (not a pattern).")
    path: str = Field(".", max_length=1024, description="The folder to search in, relative to the workspace.")
    ignore_case: bool = False


async def workspace_search(args: SearchArgs, context: ToolContext) -> str:
    request = {"op": "search", "text": args.text, "path": args.path, "ignore_case": args.ignore_case}
    return await _operate(context, request, args.path)


class WriteArgs(Arguments):
    path: str = PathField
    content: str = Field(max_length=1_000_000, description="The file's whole new content.")


async def workspace_write(args: WriteArgs, context: ToolContext) -> str:
    return await _operate(context, {"op": "write", "path": args.path, "content": args.content}, args.path)


class EditArgs(Arguments):
    path: str = PathField
    old: str = Field(min_length=1, max_length=100_000, description="Text that occurs exactly once in the file.")
    new: str = Field(max_length=100_000, description="What replaces it.")


async def workspace_edit(args: EditArgs, context: ToolContext) -> str:
    return await _operate(context, {"op": "edit", "path": args.path, "old": args.old, "new": args.new}, args.path)


class PatchArgs(Arguments):
    diff: str = Field(min_length=1, max_length=1_000_000, description="A unified diff of workspace files.")
    strip: int = Field(1, ge=0, le=5, description="Leading path components to drop from its file names (a/, b/).")


async def workspace_patch(args: PatchArgs, context: ToolContext) -> str:
    return await _operate(context, {"op": "patch", "diff": args.diff, "strip": args.strip})


TOOLS = (
    machine_tool("workspace_list", "List the files of this user's workspace folder.", ListArgs, workspace_list),
    machine_tool("workspace_read", "Read a text file of this user's workspace.", ReadArgs, workspace_read),
    machine_tool(
        "workspace_search",
        "Find lines holding a text in the files of this user's workspace.",
        SearchArgs,
        workspace_search,
    ),
    machine_tool(
        "workspace_write",
        "Write a file of this user's workspace (created, or replaced whole).",
        WriteArgs,
        workspace_write,
    ),
    machine_tool(
        "workspace_edit",
        "Replace a text that occurs exactly once in a file of this user's workspace.",
        EditArgs,
        workspace_edit,
    ),
    machine_tool(
        "workspace_patch",
        "Apply a unified diff to files of this user's workspace (GNU patch).",
        PatchArgs,
        workspace_patch,
    ),
)
