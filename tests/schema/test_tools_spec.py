"""The spec's `tools:` section: which tools are on (safe ones by default), their settings, who may
use them and their limits; typos are errors with a did-you-mean; the renderer hands the engine
the resolved list, and the engine's registry loads exactly that."""

from __future__ import annotations

import sys

import pytest

from assistantctl.engine.settings import BUILTIN_TOOLS, SAFE_TOOLS
from assistantctl.engine.tools import load_registry
from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings
from assistantctl.schema.loader import parse_spec
from spec_snippets import MINIMAL, problems


def _settings(snippet: str, tmp_path):
    spec = parse_spec(MINIMAL + snippet, "spec.yaml")
    target = Target(spec=spec, host=spec.deploy.hosts[0], root=str(tmp_path), python=sys.executable)
    return build_settings(target).tools


def test_safe_tools_are_on_by_default_and_network_tools_off(tmp_path):
    tools = _settings("", tmp_path)
    assert tools.enabled == SAFE_TOOLS
    assert all(BUILTIN_TOOLS[name] == "safe" for name in tools.enabled)
    assert (tools.max_steps, tools.step_timeout_seconds, tools.output_limit_bytes) == (8, 20, 16_000)


def test_enabled_adds_network_tools_to_the_safe_group_and_disabled_removes(tmp_path):
    snippet = """\
tools:
  enabled: [safe, http_fetch, web_search]
  disabled: [send_message, uuid]
  settings:
    search: {url: "http://127.0.0.1:8888/"}
"""
    tools = _settings(snippet, tmp_path)
    assert "http_fetch" in tools.enabled and "web_search" in tools.enabled
    assert "send_message" not in tools.enabled and "uuid" not in tools.enabled and "calculator" in tools.enabled
    assert tools.search.url == "http://127.0.0.1:8888"
    assert load_registry(tools).names == tools.enabled


def test_enabled_without_the_safe_group_is_exactly_the_named_tools(tmp_path):
    assert _settings("tools:\n  enabled: [calculator, current_time]\n", tmp_path).enabled == [
        "current_time",
        "calculator",
    ]


def test_settings_permissions_and_limits_reach_the_engine(tmp_path):
    snippet = """\
tools:
  enabled: [safe, http_fetch]
  settings:
    fetch:
      allowed_domains: [example.org]
      allowed_networks: [10.0.0.0/8]
      max_bytes: 5000
      timeout_seconds: 3
    notes: {max_notes_per_user: 7}
  permissions:
    - tool: http_fetch
      channels: [web]
      users: [alice]
  max_steps: 3
  step_timeout_seconds: 5
  output_limit_bytes: 4096
"""
    tools = _settings(snippet, tmp_path)
    assert tools.fetch.allowed_domains == ["example.org"] and tools.fetch.allowed_networks == ["10.0.0.0/8"]
    assert (tools.fetch.max_bytes, tools.fetch.timeout_seconds, tools.notes.max_notes_per_user) == (5000, 3, 7)
    [rule] = tools.permissions
    assert (rule.tool, rule.channels, rule.users) == ("http_fetch", ["web"], ["alice"])
    assert (tools.max_steps, tools.step_timeout_seconds, tools.output_limit_bytes) == (3, 5, 4096)
    registry = load_registry(tools)
    assert registry.allowed("http_fetch", "web", "alice") and not registry.allowed("http_fetch", "web", "bob")


@pytest.mark.parametrize(
    ("snippet", "wanted", "right"),
    [
        ("tools:\n  enabled: [safe, http_fetc]\n", "tools.enabled.1: Input should be 'safe'", "http_fetch"),
        ("tools:\n  disabled: [calculater]\n", "tools.disabled.0:", "calculator"),
    ],
)
def test_an_unknown_tool_name_is_an_error_with_a_did_you_mean(snippet, wanted, right):
    [line] = problems(MINIMAL + snippet)
    assert wanted in line
    assert line.endswith(f"(hint: did you mean '{right}'?)")


def test_an_unknown_setting_is_an_error_with_a_did_you_mean():
    [line] = problems(MINIMAL + "tools:\n  settings:\n    fetch:\n      allowed_domain: [a.org]\n")
    assert "unknown key 'tools.settings.fetch.allowed_domain'" in line and "did you mean 'allowed_domains'" in line


def test_web_search_needs_a_search_url():
    [line] = problems(MINIMAL + "tools:\n  enabled: [web_search]\n")
    assert "web_search is on but tools.settings.search.url is not set" in line


def test_a_permission_for_an_unknown_tool_is_an_error_with_a_did_you_mean():
    [line] = problems(MINIMAL + "tools:\n  permissions:\n    - tool: web_serch\n")
    assert "tools.permissions.0.tool: 'web_serch' is no tool" in line and "did you mean 'web_search'?" in line


MCP_SERVER = """\
  mcp_servers:
    files:
      transport: http
      url: https://mcp.example.org/mcp
      allow_tools: [read_file]
"""


def test_permissions_can_restrict_mcp_and_skill_tools_the_spec_declares(tmp_path):
    snippet = "tools:\n  permissions:\n    - {tool: mcp_files__read_file, users: [alice]}\n" + MCP_SERVER
    [rule] = _settings(snippet, tmp_path).permissions
    assert rule.tool == "mcp_files__read_file" and rule.users == ["alice"]


@pytest.mark.parametrize(
    ("tool", "wanted"),
    [
        ("mcp_disks__read_file", "no MCP server 'disks' in tools.mcp_servers"),
        ("mcp_files__write_file", "'write_file' is not in tools.mcp_servers.files.allow_tools"),
        ("skill_weather", "no skill folder of that name in tools.skill_folders"),
    ],
)
def test_a_permission_for_an_mcp_or_skill_tool_the_spec_does_not_have_is_an_error(tool, wanted):
    [line] = problems(MINIMAL + f"tools:\n  permissions:\n    - {{tool: {tool}, users: [alice]}}\n" + MCP_SERVER)
    assert wanted in line


def test_a_tool_gets_one_permission_rule():
    snippet = "tools:\n  permissions:\n    - {tool: uuid, users: [a]}\n    - {tool: uuid, users: [b]}\n"
    [line] = problems(MINIMAL + snippet)
    assert "one permission rule per tool: uuid" in line


@pytest.mark.parametrize(
    "snippet",
    [
        "tools:\n  max_steps: 0\n",
        "tools:\n  step_timeout_seconds: 0\n",
        "tools:\n  output_limit_bytes: 10\n",
        "tools:\n  settings:\n    fetch: {allowed_networks: [not-a-network]}\n",
        "tools:\n  permissions:\n    - {tool: uuid, channels: [carrier-pigeon]}\n",
    ],
)
def test_limits_and_shapes_are_checked(snippet):
    assert problems(MINIMAL + snippet)
