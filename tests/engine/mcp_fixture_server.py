"""A real MCP server written with the SDK, for tests/engine/test_tools_mcp.py.

    python mcp_fixture_server.py stdio
    python mcp_fixture_server.py http PORT

Tools: `echo` (the one the tests allow), `forbidden` (never allowed), `fail` (a tool error),
`slow` (sleeps longer than any test's timeout), `whoami` (the environment variable and request
header a spec passes, to prove env and headers reach the server, and its pid).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("fixture")


@server.tool()
def echo(text: str, times: int = 1) -> str:
    """Echo a text, `times` times."""
    return " ".join([text] * times)


@server.tool()
def forbidden() -> str:
    """A tool no test allows."""
    return "you should never see this"


@server.tool()
def fail(reason: str) -> str:
    """Fail with a tool error."""
    raise ToolError(f"refused: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "finally"


@server.tool()
def whoami(ctx: Context) -> str:
    """The FIXTURE_TOKEN environment variable, the X-Fixture-Token request header and the pid."""
    request = ctx.request_context.request
    header = request.headers.get("x-fixture-token", "-") if request is not None else "-"
    return f"env={os.environ.get('FIXTURE_TOKEN', '-')} header={header} pid={os.getpid()}"


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
