"""What the tools cost a worker that never calls them (issue 13's memory budget: idle RSS of a
worker <= 80 MB). The registry reads every module of engine/tools/builtin/ at start; the heavy
libraries some tools use (trafilatura with lxml ~11 MB, pint and httpx ~3.5 MB each) are imported
by the first call of those tools instead (their calls are tested in test_tools_builtin.py and
test_tools_network.py)."""

from __future__ import annotations

import json
import subprocess
import sys

# Libraries only a tool call needs, none of them used by the engine's request path.
CALL_ONLY = ("trafilatura", "lxml", "pint", "httpx", "jsonschema")

LOAD_EVERY_TOOL = """
import json, sys
from assistantctl.engine.settings import BUILTIN_TOOLS, ToolsSettings
from assistantctl.engine.tools import load_registry

registry = load_registry(ToolsSettings(enabled=list(BUILTIN_TOOLS)))
registry.definitions("web", "anonymous")  # what every request offers the model
print(json.dumps(sorted(name for name in sys.argv[1:] if name in sys.modules)))
"""


def test_loading_every_shipped_tool_imports_no_library_only_a_call_needs():
    # A fresh interpreter: this test process has imported them already through other tests.
    out = subprocess.run(
        [sys.executable, "-c", LOAD_EVERY_TOOL, *CALL_ONLY], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
