"""MCP servers' tools in the registry: a real MCP server written with the SDK
(tests/engine/mcp_fixture_server.py) is started as a subprocess over stdio, and over streamable
HTTP on loopback; its allowed tools are offered as `mcp_<server>__<tool>` with the server's JSON
Schema, their answers are tainted, a tool error and a slow tool become errors for the model, the
engine starts while a server is down, and a restarted HTTP server is reconnected on the next call."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistantctl.engine.settings import McpServerSettings, ToolsSettings
from assistantctl.engine.tools import call_tool, load_registry
from assistantctl.engine.tools.mcp import McpManager, namespaced
from fake_models import free_port
from processes import stop_process
from test_tools_context import fake_context

SERVER = Path(__file__).with_name("mcp_fixture_server.py")
ALLOWED = ["echo", "fail", "slow", "whoami"]
OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SECRETS = {"mcp.fix.token": "from-the-secrets-file", "mcp.fix.header": "header-secret"}


def _stdio(**extra) -> McpServerSettings:
    fields = {
        "name": "fix",
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(SERVER), "stdio"],
        "env": {"PYTHONUNBUFFERED": "1"},
        "env_secrets": {"FIXTURE_TOKEN": "mcp.fix.token"},
        "allow_tools": ALLOWED,
        "timeout_seconds": 1,
    }
    return McpServerSettings(**(fields | extra))


def _http(port: int, **extra) -> McpServerSettings:
    fields = {
        "name": "web",
        "transport": "http",
        "url": f"http://127.0.0.1:{port}/mcp",
        "headers": {"X-Other": "plain"},
        "header_secrets": {"X-Fixture-Token": "mcp.fix.header"},
        "allow_tools": ALLOWED,
        "timeout_seconds": 1,
        "connect_timeout_seconds": 5,
    }
    return McpServerSettings(**(fields | extra))


def _start_http(port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)], stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    stop_process(process)
    raise AssertionError(f"the MCP fixture server did not listen on {port}: {log.read_text()}")


@pytest.fixture
def http_port(tmp_path):
    port = free_port()
    process = _start_http(port, tmp_path / "mcp.log")
    yield port
    stop_process(process)


async def _manager(*servers: McpServerSettings, wait: bool = True) -> McpManager:
    manager = McpManager(list(servers), SECRETS)
    await manager.start()
    if wait:
        assert await manager.wait_connected(60), "the MCP server did not connect"
    return manager


def _registry(manager: McpManager, settings: ToolsSettings):
    return load_registry(settings, sources=[manager])


async def _call(registry, tmp_path, name: str, args: dict):
    return await call_tool(registry, name, json.dumps(args), fake_context(tmp_path, settings=registry.settings))


async def _listing_allow_list_and_calls(manager: McpManager, prefix: str, tmp_path: Path) -> None:
    settings = ToolsSettings(enabled=["calculator"])
    registry = _registry(manager, settings)
    names = registry.names
    assert names[0] == "calculator"
    assert sorted(names[1:]) == [f"{prefix}{tool}" for tool in sorted(ALLOWED)]
    assert f"{prefix}forbidden" not in names and all(OPENAI_NAME.match(name) for name in names)
    definitions = {d["function"]["name"]: d["function"] for d in registry.definitions("web", "alice")}
    echo = definitions[f"{prefix}echo"]
    assert echo["description"].startswith("Echo a text")
    assert echo["parameters"]["required"] == ["text"] and echo["parameters"]["properties"]["times"]["default"] == 1
    assert registry.get(f"{prefix}echo").risk == "network"

    result = await _call(registry, tmp_path, f"{prefix}echo", {"text": "hi", "times": 2})
    assert (result.outcome, result.content, result.tainted) == ("ok", "hi hi", True)

    result = await _call(registry, tmp_path, f"{prefix}fail", {"reason": "not today"})
    assert result.outcome == "error" and "refused: not today" in result.content and result.tainted

    # The server's schema is checked before anything is sent.
    result = await _call(registry, tmp_path, f"{prefix}echo", {"text": "hi", "times": "two"})
    assert result.outcome == "invalid_arguments" and "times" in result.content

    result = await _call(registry, tmp_path, f"{prefix}forbidden", {})
    assert result.outcome == "unknown_tool"

    started = time.monotonic()
    result = await _call(registry, tmp_path, f"{prefix}slow", {"seconds": 30})
    assert result.outcome == "error" and "did not answer within 1 second" in result.content
    assert time.monotonic() - started < 20

    # The connection is still good after a timed-out call.
    result = await _call(registry, tmp_path, f"{prefix}echo", {"text": "still here"})
    assert (result.outcome, result.content) == ("ok", "still here")


async def test_a_stdio_server_offers_its_allowed_tools_namespaced(tmp_path):
    manager = await _manager(_stdio())
    try:
        await _listing_allow_list_and_calls(manager, "mcp_fix__", tmp_path)
        result = await _call(_registry(manager, ToolsSettings(enabled=[])), tmp_path, "mcp_fix__whoami", {})
        assert "env=from-the-secrets-file" in result.content
        pid = int(re.search(r"pid=(\d+)", result.content).group(1))
    finally:
        await manager.close()
    # A clean shutdown ends the server process.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_an_http_server_offers_its_allowed_tools_namespaced(tmp_path, http_port):
    manager = await _manager(_http(http_port))
    try:
        await _listing_allow_list_and_calls(manager, "mcp_web__", tmp_path)
        result = await _call(_registry(manager, ToolsSettings(enabled=[])), tmp_path, "mcp_web__whoami", {})
        assert "header=header-secret" in result.content
    finally:
        await manager.close()


async def test_a_restarted_http_server_is_reconnected_on_the_next_call(tmp_path):
    port, log = free_port(), tmp_path / "mcp.log"
    process = _start_http(port, log)
    manager = await _manager(_http(port, timeout_seconds=15))
    registry = _registry(manager, ToolsSettings(enabled=[], step_timeout_seconds=30))
    try:
        assert (await _call(registry, tmp_path, "mcp_web__echo", {"text": "one"})).outcome == "ok"
        stop_process(process, signal.SIGKILL)  # a crash: the server forgets every session
        process = _start_http(port, log)
        # The call that finds the old session gone may fail; the next one reconnects.
        outcomes = []
        for _ in range(2):
            result = await _call(registry, tmp_path, "mcp_web__echo", {"text": "two"})
            outcomes.append((result.outcome, result.content))
            if result.ok:
                break
        assert outcomes[-1] == ("ok", "two"), outcomes
    finally:
        await manager.close()
        stop_process(process)


async def test_the_engine_starts_while_a_server_is_down_and_picks_it_up_later(tmp_path):
    port = free_port()
    manager = await _manager(_http(port), wait=False)
    registry = _registry(manager, ToolsSettings(enabled=["calculator"]))
    process = None
    try:
        assert registry.names == ["calculator"]  # start did not wait for the server
        result = await _call(registry, tmp_path, "mcp_web__echo", {"text": "x"})
        assert result.outcome == "unknown_tool"
        process = _start_http(port, tmp_path / "mcp.log")
        assert await manager.wait_connected(60)
        assert "mcp_web__echo" in registry.names
        assert (await _call(registry, tmp_path, "mcp_web__echo", {"text": "x"})).content == "x"
    finally:
        await manager.close()
        if process:
            stop_process(process)


async def test_a_server_that_cannot_start_does_not_stop_the_others(tmp_path):
    broken = _stdio(name="broken", command="/nonexistent/mcp-server")
    manager = await _manager(broken, _stdio(), wait=False)
    try:
        deadline = time.monotonic() + 60
        while "mcp_fix__echo" not in manager.tools() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert "mcp_fix__echo" in manager.tools()
        assert not [name for name in manager.tools() if name.startswith("mcp_broken__")]
    finally:
        await manager.close()


@pytest.mark.parametrize(
    ("server", "tool"),
    [("fix", "echo"), ("fix", "read.file/v2"), ("a-b", "x" * 128), ("s", "é")],
)
def test_namespaced_names_fit_openai_and_stay_apart(server, tool):
    name = namespaced(server, tool)
    assert OPENAI_NAME.match(name) and name.startswith(f"mcp_{server}__")
    assert namespaced(server, tool) == name
    assert namespaced(server, tool + "2") != name


def test_a_server_needs_its_transport_fields():
    with pytest.raises(ValueError, match="command"):
        McpServerSettings(name="x", transport="stdio")
    with pytest.raises(ValueError, match="url"):
        McpServerSettings(name="x", transport="http")


def test_an_engine_without_mcp_servers_never_loads_the_sdk(tmp_path):
    """The SDK costs each worker ~50 MB: only an engine that declares a server imports it."""
    from engine_process import build_settings, model

    path = tmp_path / "settings.json"
    path.write_text(build_settings(tmp_path, free_port(), [model("local")]).to_json())
    code = (
        "import sys; from assistantctl.engine.runtime import Runtime; Runtime(sys.argv[1]); print('mcp' in sys.modules)"
    )
    command = [sys.executable, "-c", code, str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() == "False", result.stderr
