"""The tools a request may use: every module of engine/tools/builtin/ that defines `TOOLS` is read
once, so adding a tool is adding a file there (and its name to `BUILTIN_TOOLS` in engine/settings.py,
which the spec validates against)."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any

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


class Registry:
    """The enabled tools with the settings that limit them (permissions, time, output size)."""

    def __init__(self, tools: Iterable[Tool], settings: ToolsSettings) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.settings = settings
        self._rules = {rule.tool: rule for rule in settings.permissions}

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def allowed(self, name: str, channel: str, user: str) -> bool:
        """Whether `user` on `channel` may call the tool (enabled, and admitted by its permission rule)."""
        if name not in self.tools:
            return False
        rule = self._rules.get(name)
        if rule is None:
            return True
        return (not rule.channels or channel in rule.channels) and (not rule.users or user in rule.users)

    def definitions(self, channel: str, user: str) -> list[dict[str, Any]]:
        """The OpenAI `tools` list this caller may be offered."""
        return [tool.definition() for name, tool in self.tools.items() if self.allowed(name, channel, user)]


def load_registry(settings: ToolsSettings) -> Registry:
    """The registry of `settings.enabled`; raises ValueError naming a tool that does not exist."""
    shipped = builtin_tools()
    unknown = [name for name in settings.enabled if name not in shipped]
    if unknown:
        raise ValueError(f"unknown tools: {', '.join(unknown)}")
    return Registry([shipped[name] for name in settings.enabled], settings)
