"""The tools a request may use: every module of engine/tools/builtin/ that defines `TOOLS` is read
once, so adding a tool is adding a file there (and its name to `BUILTIN_TOOLS` in engine/settings/tools.py,
which the spec validates against). Tools found while the engine runs (MCP servers') join through a
`ToolSource`."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..settings import ToolsSettings
from . import builtin
from .base import Tool


@functools.cache
def builtin_tools() -> dict[str, Tool]:
    """Every shipped tool by name; raises ValueError when two modules declare one name."""
    found: dict[str, Tool] = {}
    for module in pkgutil.iter_modules(builtin.__path__):
        for tool in getattr(importlib.import_module(f"{builtin.__name__}.{module.name}"), "TOOLS", ()):
            if tool.name in found:
                raise ValueError(f"tool '{tool.name}' is declared twice")
            found[tool.name] = tool
    return found


class ToolSource(Protocol):
    """Tools that come and go while the engine runs (an MCP server's, engine/tools/mcp.py)."""

    def tools(self) -> Mapping[str, Tool]:
        """The tools available now, by name."""
        ...


class Registry:
    """The enabled tools with the settings that limit them (permissions, time, output size), and
    the tools of `sources`, read at each use (a shipped tool keeps its name if a source has it too)."""

    def __init__(self, tools: Iterable[Tool], settings: ToolsSettings, sources: Sequence[ToolSource] = ()) -> None:
        self._own = {tool.name: tool for tool in tools}
        self.settings = settings
        self.sources = tuple(sources)
        self._rules = {rule.tool: rule for rule in settings.permissions}
        # engine/tools/loop.py's `offered`: (the tools, their definitions) when no rule filters them
        self.offered_to_everyone: tuple[tuple[Tool, ...], list[dict[str, Any]]] | None = None

    @property
    def tools(self) -> dict[str, Tool]:
        """Every tool by name: the shipped ones first, then each source's."""
        if not self.sources:
            return self._own
        found = dict(self._own)
        for source in self.sources:
            for name, tool in source.tools().items():
                found.setdefault(name, tool)
        return found

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def get(self, name: str) -> Tool | None:
        if name in self._own:
            return self._own[name]
        for source in self.sources:
            tool = source.tools().get(name)
            if tool is not None:
                return tool
        return None

    def allowed(self, name: str, channel: str, user: str) -> bool:
        """Whether `user` on `channel` may call the tool (enabled, and admitted by its permission rule)."""
        if self.get(name) is None:
            return False
        rule = self._rules.get(name)
        if rule is None:
            return True
        return (not rule.channels or channel in rule.channels) and (not rule.users or user in rule.users)

    def definitions(self, channel: str, user: str) -> list[dict[str, Any]]:
        """The OpenAI `tools` list this caller may be offered."""
        return [tool.definition() for name, tool in self.tools.items() if self.allowed(name, channel, user)]


def load_registry(settings: ToolsSettings, sources: Sequence[ToolSource] = ()) -> Registry:
    """The registry of `settings.enabled` plus the tools of `sources` (the engine's McpManager);
    raises ValueError naming a tool that does not exist."""
    shipped = builtin_tools()
    unknown = [name for name in settings.enabled if name not in shipped]
    if unknown:
        raise ValueError(f"unknown tools: {', '.join(unknown)}")
    return Registry([shipped[name] for name in settings.enabled], settings, sources)
