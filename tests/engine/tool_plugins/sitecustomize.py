"""Test tools in a real engine process: on the PYTHONPATH of an engine started by the tool loop
tests, this adds `hang`, `boom`, `slow` and `huge` to the shipped tools (a settings file may then
enable them), so that a tool that hangs, raises, takes its time or answers too much can be
driven through the engine's API. Nothing else is changed."""

from __future__ import annotations

import asyncio

from pydantic import Field

from assistantctl.engine.tools import registry
from assistantctl.engine.tools.base import Arguments, Tool


class Nothing(Arguments):
    pass


class Text(Arguments):
    text: str = Field("", max_length=100)


async def hang(args: Nothing, context: object) -> str:
    await asyncio.sleep(3600)
    return "never"


async def boom(args: Nothing, context: object) -> str:
    raise RuntimeError("a bug in a tool")


async def slow(args: Text, context: object) -> str:
    await asyncio.sleep(0.3)
    return f"slow done {args.text}".strip()


async def huge(args: Nothing, context: object) -> str:
    return "x" * 100_000


TEST_TOOLS = {
    tool.name: tool
    for tool in (
        Tool("hang", "Never answers.", Nothing, hang),
        Tool("boom", "Raises.", Nothing, boom),
        Tool("slow", "Answers after 0.3 s.", Text, slow),
        Tool("huge", "Answers 100 kB.", Nothing, huge),
    )
}
_shipped = registry.builtin_tools


def _with_test_tools() -> dict[str, Tool]:
    return {**_shipped(), **TEST_TOOLS}


registry.builtin_tools = _with_test_tools
