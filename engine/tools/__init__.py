"""Tools the model may call: one small module per tool under builtin/, a registry, and `call_tool`.

base.py      Tool, ToolContext, ToolOutput (tainted text), ToolResult, ToolError
registry.py  builtin_tools(), Registry (enabled tools + permissions), load_registry(settings)
call.py      call_tool(registry, name, raw_arguments_json, context) -> ToolResult
net.py       the SSRF-safe GET every network tool goes through
"""

from .base import Arguments, Context, Risk, Tool, ToolContext, ToolError, ToolOutput, ToolResult
from .call import call_tool
from .registry import Registry, builtin_tools, load_registry

__all__ = [
    "Arguments",
    "Context",
    "Registry",
    "Risk",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolOutput",
    "ToolResult",
    "builtin_tools",
    "call_tool",
    "load_registry",
]
