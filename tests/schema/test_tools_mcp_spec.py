"""The spec's `tools.mcp_servers`: MCP servers over stdio or streamable HTTP, their secrets kept out
of settings.json (they go to the engine's secrets file), a per-server allow-list of tools that
allows nothing unless named, and every name and URL checked at the edge."""

from __future__ import annotations

import json
import sys

import pytest

from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings, secret_files
from assistantctl.schema.loader import parse_spec
from assistantctl.schema.secrets import secret_refs
from spec_snippets import MINIMAL, problems

BOTH = """\
tools:
  mcp_servers:
    files:
      transport: stdio
      command: /usr/local/bin/mcp-files
      args: [--root, /srv/files]
      env:
        FILES_TOKEN: "${env:FILES_TOKEN}"
        LOG_LEVEL: info
      allow_tools: [read_file, list_dir]
      timeout_seconds: 5
    search:
      transport: http
      url: https://mcp.example.org/mcp
      headers:
        Authorization: "${env:SEARCH_MCP_AUTH}"
        X-Client: assistant
      allow_tools: ["*"]
"""


def _target(snippet: str, tmp_path) -> Target:
    spec = parse_spec(MINIMAL + snippet, "spec.yaml")
    return Target(spec=spec, host=spec.deploy.hosts[0], root=str(tmp_path), python=sys.executable)


def test_servers_reach_the_engine_with_secrets_named_not_written(tmp_path):
    target = _target(BOTH, tmp_path)
    settings = build_settings(target)
    files, search = settings.tools.mcp_servers
    assert (files.name, files.transport, files.command, files.args) == (
        "files",
        "stdio",
        "/usr/local/bin/mcp-files",
        ["--root", "/srv/files"],
    )
    assert files.env == {"LOG_LEVEL": "info"}
    assert files.env_secrets == {"FILES_TOKEN": "tools.mcp_servers.files.env.FILES_TOKEN"}
    assert (files.allow_tools, files.timeout_seconds) == (["read_file", "list_dir"], 5)
    assert (search.transport, search.url) == ("http", "https://mcp.example.org/mcp")
    assert search.headers == {"X-Client": "assistant"}
    assert search.header_secrets == {"Authorization": "tools.mcp_servers.search.headers.Authorization"}
    assert search.allow_tools == ["*"]
    # The settings file names the secrets file, which carries the values; settings.json does not.
    assert settings.secrets_file
    values = {name: f"value-of-{name}" for name in secret_refs(target.spec)}
    written = json.loads(secret_files(target, values)["secrets.json"])
    assert written["tools.mcp_servers.files.env.FILES_TOKEN"] == "value-of-tools.mcp_servers.files.env.FILES_TOKEN"
    assert "tools.mcp_servers.search.headers.Authorization" in written
    assert "value-of" not in settings.to_json() and "${env:" not in settings.to_json()


def test_no_server_by_default_and_a_server_allows_no_tool_unless_named(tmp_path):
    assert build_settings(_target("", tmp_path)).tools.mcp_servers == []
    snippet = "tools:\n  mcp_servers:\n    local:\n      transport: stdio\n      command: mcp-local\n"
    [server] = build_settings(_target(snippet, tmp_path)).tools.mcp_servers
    assert server.allow_tools == []
    assert (server.timeout_seconds, server.connect_timeout_seconds) == (30, 10)


@pytest.mark.parametrize(
    ("server", "wanted"),
    [
        # Names become part of tool names the model sees (^[a-zA-Z0-9_-]{1,64}$ with a prefix).
        ("Files:\n      transport: stdio\n      command: x\n", "tools.mcp_servers.Files"),
        ("a__b:\n      transport: stdio\n      command: x\n", "tools.mcp_servers.a__b"),
        ("x" * 30 + ":\n      transport: stdio\n      command: x\n", "tools.mcp_servers." + "x" * 30),
        # A transport's own fields, and only those.
        ("f:\n      transport: pipe\n      command: x\n", "tools.mcp_servers.f"),
        ("f:\n      transport: stdio\n", "command"),
        ("f:\n      transport: stdio\n      command: x\n      url: http://127.0.0.1:1/mcp\n", "url"),
        ("f:\n      transport: http\n      url: ftp://example.org/mcp\n", "url"),
        ("f:\n      transport: stdio\n      command: 'rm -rf /; x'\n", "command"),
        ("f:\n      transport: stdio\n      command: x\n      env: {'1BAD': a}\n", "env"),
        ("f:\n      transport: http\n      url: http://127.0.0.1:1/mcp\n      headers: {'Bad Header': a}\n", "headers"),
        ("f:\n      transport: stdio\n      command: x\n      allow_tools: ['read file']\n", "allow_tools"),
        ("f:\n      transport: stdio\n      command: x\n      timeout_seconds: 0\n", "timeout_seconds"),
    ],
)
def test_names_transports_and_fields_are_checked(server, wanted):
    lines = problems(MINIMAL + "tools:\n  mcp_servers:\n    " + server)
    assert any(wanted in line for line in lines), lines


@pytest.mark.parametrize(
    ("server", "wanted"),
    [
        # A credential written in clear would land in settings.json: refs only.
        ("transport: stdio\n      command: x\n      env: {API_TOKEN: abc123}", "env.API_TOKEN"),
        ("transport: http\n      url: https://e.org/mcp\n      headers: {Authorization: Bearer abc}", "Authorization"),
        ("transport: http\n      url: https://e.org/mcp\n      headers: {X-Api-Key: abc}", "X-Api-Key"),
        ("transport: http\n      url: https://user:pw@e.org/mcp", "credentials in the URL"),
        ("transport: stdio\n      command: x\n      args: ['${env:TOKEN}']", "through env"),
        # A secret header in clear over the network.
        ("transport: http\n      url: http://e.org/mcp\n      headers: {Authorization: '${env:A}'}", "https"),
    ],
)
def test_secrets_are_references_and_travel_safely(server, wanted):
    lines = problems(MINIMAL + "tools:\n  mcp_servers:\n    f:\n      " + server + "\n")
    assert any(wanted in line for line in lines), lines


def test_a_secret_header_over_plain_http_to_loopback_is_fine(tmp_path):
    snippet = (
        "tools:\n  mcp_servers:\n    f:\n      transport: http\n      url: http://127.0.0.1:8931/mcp\n"
        "      headers: {Authorization: '${env:A}'}\n"
    )
    [server] = build_settings(_target(snippet, tmp_path)).tools.mcp_servers
    assert server.header_secrets == {"Authorization": "tools.mcp_servers.f.headers.Authorization"}
