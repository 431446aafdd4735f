"""MCP servers' tools for the model, through the official SDK (`mcp`): each server of
`tools.mcp_servers` is connected in the background over stdio (`stdio_client`) or streamable HTTP
(`streamable_http_client`) with a `ClientSession`; its allowed tools are listed and offered as
`mcp_<server>__<tool>` (`namespaced`), risk class `network`, with the server's JSON Schema as
parameters; what they answer, errors included, is tainted (text from elsewhere).

A server down at start does not hold the engine: its connection is retried with backoff
(BACKOFF_FIRST doubling to BACKOFF_MAX seconds), and its tools appear once it answers. A call waits
for the connection up to the server's `timeout_seconds` (and nudges a retry that is backing off),
then gets what is left of that time to answer. A call that finds the connection gone fails and
drops it, and the next call waits for the reconnection: a call is sent again only when the server
refused it whole (INVALID_REQUEST, e.g. a restarted HTTP server's 404 for the old session, which
the MCP spec answers with a new session), since otherwise the server may have run it. An idle
connection is pinged every PING_SECONDS, so a dead one is found and replaced before anyone calls.

The engine, per worker:
    manager = McpManager(settings.tools.mcp_servers, secrets)
    await manager.start()                                   # returns at once
    registry = load_registry(settings.tools, sources=[manager])
    ...
    await manager.close()                                   # ends stdio servers, closes sessions
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx2
import jsonschema
import mcp_types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ..logs import event
from ..settings import McpServerSettings
from .base import JsonArguments, Tool, ToolContext, ToolError, ToolOutput, json_arguments

LOG = logging.getLogger("engine.tools.mcp")
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
PING_SECONDS = 20.0
# Long enough for a streamable HTTP server's event stream, which stays open between calls.
HTTP_READ_SECONDS = 300.0
MAX_DESCRIPTION_CHARS = 1024
MAX_NAME_CHARS = 64  # OpenAI's tool names: ^[a-zA-Z0-9_-]{1,64}$
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def namespaced(server: str, tool: str) -> str:
    """The name the model sees for `tool` of `server`: `mcp_<server>__<tool>`, fit for OpenAI's
    pattern. A tool name with other characters, or too long, gets a digest of the real name, so two
    tools of a server never share a name."""
    safe = _UNSAFE.sub("_", tool)
    name = f"mcp_{server}__{safe}"
    if safe == tool and len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(tool.encode("utf-8")).hexdigest()[:8]
    room = MAX_NAME_CHARS - len(f"mcp_{server}__") - len(digest) - 1
    return f"mcp_{server}__{safe[:room]}_{digest}"


class McpManager:
    """Every configured MCP server, as a `ToolSource` for the registry (engine/tools/registry.py)."""

    def __init__(self, servers: Sequence[McpServerSettings], secrets: Mapping[str, str]) -> None:
        self.servers: list[McpServer] = []
        for settings in servers:
            try:
                self.servers.append(McpServer(settings, secrets))
            except ValueError as exc:  # a missing secret leaves that one server out, not the engine
                event(LOG, logging.ERROR, str(exc), mcp_server=settings.name)

    async def start(self) -> None:
        """Begin connecting every server in the background; returns at once."""
        for server in self.servers:
            server.start()

    def tools(self) -> dict[str, Tool]:
        """The allowed tools of the servers that have listed theirs, by namespaced name."""
        found: dict[str, Tool] = {}
        for server in self.servers:
            found.update(server.tools)
        return found

    async def wait_connected(self, timeout: float) -> bool:
        """Whether every server is connected within `timeout` seconds (for tests and health)."""
        waits = [server.connected.wait() for server in self.servers]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Close every session and end every stdio server; waits for them."""
        await asyncio.gather(*(server.close() for server in self.servers))


class McpServer:
    """One server: its connection, kept up by a task of its own, and its allowed tools."""

    def __init__(self, settings: McpServerSettings, secrets: Mapping[str, str]) -> None:
        self.settings = settings
        self.env = settings.env | _resolve(settings, settings.env_secrets, secrets)
        self.headers = settings.headers | _resolve(settings, settings.header_secrets, secrets)
        self.tools: dict[str, Tool] = {}  # the last listing stays offered while reconnecting
        self.connected = asyncio.Event()
        self._session: ClientSession | None = None
        self._drop = asyncio.Event()  # leave the current session (lost, or closing)
        self._nudge = asyncio.Event()  # a call is waiting: retry without the rest of the backoff
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.name}")

    async def close(self) -> None:
        self._closing = True
        self._drop.set()
        self._nudge.set()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(self.settings.connect_timeout_seconds + 5):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolOutput:
        """Run the server's `tool`; raises ToolError with a sentence for the model."""
        timeout = self.settings.timeout_seconds
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            result = await self._attempt(tool, arguments, deadline)
        except _SessionExpired:
            # The server refused the request as a whole (a streamable HTTP server that restarted
            # answers 404 to the old session id): nothing ran, so once more on a new session.
            try:
                result = await self._attempt(tool, arguments, deadline)
            except _SessionExpired as exc:
                raise ToolError(f"the MCP server '{self.name}' refused the call: {exc}", tainted=True) from None
        if not isinstance(result, mcp_types.CallToolResult):
            raise ToolError(f"the MCP server '{self.name}' answered something other than a tool result")
        text = _text(result)
        if result.is_error:
            raise ToolError(text or "the tool reported an error", tainted=True)
        return ToolOutput(text, tainted=True)

    async def _attempt(self, tool: str, arguments: dict[str, Any], deadline: float) -> Any:
        timeout, loop = self.settings.timeout_seconds, asyncio.get_running_loop()
        if not self.connected.is_set():
            self._nudge.set()
            if not await _wait(self.connected, deadline - loop.time()):
                raise ToolError(f"the MCP server '{self.name}' is not reachable now (reconnecting)")
        session = self._session
        assert session is not None  # set before `connected`, cleared after it
        try:
            return await session.call_tool(tool, arguments, read_timeout_seconds=max(deadline - loop.time(), 0.001))
        except MCPError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                raise ToolError(f"the MCP server '{self.name}' did not answer within {timeout:g} seconds") from None
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self._lost(session, "connection closed")
                raise ToolError(
                    f"the connection to the MCP server '{self.name}' was lost; it is reconnecting"
                ) from None
            if exc.code == mcp_types.INVALID_REQUEST and self.settings.transport == "http":
                self._lost(session, f"request refused ({exc.message})")
                raise _SessionExpired(exc.message) from None
            raise ToolError(f"the MCP server '{self.name}' refused the call: {exc.message}", tainted=True) from None
        except Exception as exc:  # noqa: BLE001 - a transport failure is the connection's, not the engine's
            self._lost(session, _reason(exc))
            raise ToolError(f"the connection to the MCP server '{self.name}' failed; it is reconnecting") from None

    def _lost(self, session: ClientSession, reason: str) -> None:
        if self._session is session:
            event(LOG, logging.WARNING, f"MCP server '{self.name}' lost: {reason}", mcp_server=self.name)
            self.connected.clear()
            self._drop.set()

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        while not self._closing:
            was_connected = False
            try:
                was_connected = await self._serve()
            except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
                event(
                    LOG,
                    logging.WARNING,
                    f"MCP server '{self.name}' unavailable ({_reason(exc)}); next try within {delay:g} s",
                    mcp_server=self.name,
                )
            if self._closing:
                return
            delay = BACKOFF_FIRST if was_connected else min(delay * 2, BACKOFF_MAX)
            self._nudge.clear()
            # Never faster than BACKOFF_FIRST, even when calls are waiting.
            await asyncio.sleep(BACKOFF_FIRST)
            await _wait(self._nudge, delay - BACKOFF_FIRST)

    async def _serve(self) -> bool:
        """Connect, list, and stay connected until dropped; False when closing before connecting."""
        async with self._transport() as (read, write), ClientSession(read, write) as session:
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                await session.initialize()
                listed = await _list_tools(session)
            self.tools = self._allowed(listed)
            if self._closing:
                return False
            self._session = session
            self._drop.clear()
            self.connected.set()
            event(
                LOG,
                logging.INFO,
                f"MCP server '{self.name}' connected, tools offered: {', '.join(self.tools) or 'none'}",
                mcp_server=self.name,
            )
            try:
                await self._keepalive(session)
            finally:
                self.connected.clear()
                self._session = None
        return True

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[Any]:
        settings = self.settings
        if settings.transport == "stdio":
            assert settings.command is not None  # McpServerSettings checks it
            params = StdioServerParameters(command=settings.command, args=list(settings.args), env=self.env)
            async with stdio_client(params, errlog=sys.stderr) as streams:
                yield streams
            return
        assert settings.url is not None
        timeout = httpx2.Timeout(settings.connect_timeout_seconds, read=HTTP_READ_SECONDS)
        async with (
            httpx2.AsyncClient(headers=self.headers, timeout=timeout) as client,
            streamable_http_client(settings.url, http_client=client) as streams,
        ):
            yield streams

    async def _keepalive(self, session: ClientSession) -> None:
        while not await _wait(self._drop, PING_SECONDS):
            try:
                async with asyncio.timeout(self.settings.connect_timeout_seconds):
                    await session.send_ping()
            except Exception as exc:  # noqa: BLE001 - no answer: the session is gone
                self._lost(session, f"no answer to a ping ({_reason(exc)})")
                return

    def _allowed(self, listed: list[mcp_types.Tool]) -> dict[str, Tool]:
        allow = self.settings.allow_tools
        found: dict[str, Tool] = {}
        for spec in listed:
            if "*" not in allow and spec.name not in allow:
                continue
            tool = self._tool(spec)
            if tool is not None and tool.name not in found:
                found[tool.name] = tool
        missing = sorted(set(allow) - {"*"} - {spec.name for spec in listed})
        if missing:
            event(
                LOG,
                logging.WARNING,
                f"MCP server '{self.name}' has no tool {', '.join(missing)} (named in allow_tools)",
                mcp_server=self.name,
            )
        return found

    def _tool(self, spec: mcp_types.Tool) -> Tool | None:
        name = namespaced(self.name, spec.name)
        try:
            args = json_arguments(dict(spec.input_schema), name=f"{name}_arguments")
        except jsonschema.SchemaError as exc:
            event(LOG, logging.WARNING, f"MCP tool '{name}' left out: bad input schema ({exc.message})")
            return None
        remote = spec.name

        async def run(arguments: JsonArguments, context: ToolContext) -> ToolOutput:
            return await self.call(remote, arguments.values)

        description = (spec.description or spec.title or spec.name)[:MAX_DESCRIPTION_CHARS]
        return Tool(name, description, args, run, risk="network")


class _SessionExpired(Exception):
    """The server refused a request whole (INVALID_REQUEST): the session is gone, nothing ran."""


def _resolve(settings: McpServerSettings, names: Mapping[str, str], secrets: Mapping[str, str]) -> dict[str, str]:
    missing = sorted(secret for secret in names.values() if secret not in secrets)
    if missing:
        raise ValueError(f"MCP server '{settings.name}' left out: no secret {', '.join(missing)} in the secrets file")
    return {key: secrets[secret] for key, secret in names.items()}


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    listed: list[mcp_types.Tool] = []
    cursor: str | None = None
    while True:
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        listed.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return listed


def _text(result: mcp_types.CallToolResult) -> str:
    """A tool result as text for the model; what is not text is named, not inlined."""
    parts = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource) and isinstance(
            block.resource, mcp_types.TextResourceContents
        ):
            parts.append(block.resource.text)
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource: {block.uri}]")
        else:
            parts.append(f"[{getattr(block, 'type', 'unknown')} content left out]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


async def _wait(flag: asyncio.Event, seconds: float) -> bool:
    """Whether `flag` is set within `seconds`."""
    if flag.is_set():
        return True
    try:
        async with asyncio.timeout(max(seconds, 0)):
            await flag.wait()
    except TimeoutError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    """A short cause: the first real error inside the SDK's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
