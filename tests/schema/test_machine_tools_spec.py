"""The machine tools in the spec (workspace_*, python, shell): off by default, their sandbox settings
reach the engine with the workspaces under the deploy root (not in the engine's 0700 data folder),
permission rules may name them, and `validate` refuses to enable one where callers need no
credentials (`security.anonymous: anywhere`), with the file, line and column of the tool."""

from __future__ import annotations

import sys
from importlib import metadata

from assistantctl.apply import debian_packages, host_vars
from assistantctl.engine.settings import BUILTIN_TOOLS
from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings
from assistantctl.schema.loader import parse_spec
from assistantctl.targets import engine_needs
from spec_snippets import MINIMAL, problems

MACHINE = ["workspace_list", "workspace_read", "workspace_search", "workspace_write", "workspace_edit",
           "workspace_patch", "python", "shell"]  # fmt: skip


def _settings(snippet: str, tmp_path):
    spec = parse_spec(MINIMAL + snippet, "spec.yaml")
    target = Target(spec=spec, host=spec.deploy.hosts[0], root=str(tmp_path), python=sys.executable)
    return build_settings(target).tools


def test_machine_tools_are_off_by_default_and_safe_does_not_bring_them(tmp_path):
    assert all(BUILTIN_TOOLS[name] == "machine" for name in MACHINE)
    assert not set(MACHINE) & set(_settings("", tmp_path).enabled)
    assert not set(MACHINE) & set(_settings("tools:\n  enabled: [safe, http_fetch]\n", tmp_path).enabled)


def test_machine_settings_reach_the_engine_with_workspaces_beside_the_data_folder(tmp_path):
    snippet = """\
tools:
  enabled: [safe, python, shell, workspace_read]
  settings:
    machine:
      workspace_quota_mb: 10
      memory_mb: 128
      output_kb: 8
      shell_commands: [ls, wc]
  permissions:
    - {tool: python, channels: [web], users: [alice]}
"""
    tools = _settings(snippet, tmp_path)
    assert {"python", "shell", "workspace_read"} <= set(tools.enabled)
    machine = tools.machine
    assert machine.workspaces_dir == f"{tmp_path}/workspaces"
    assert (machine.workspace_quota_bytes, machine.memory_bytes, machine.output_bytes) == (10 << 20, 128 << 20, 8192)
    assert machine.shell_commands == ["ls", "wc"]
    assert [(rule.tool, rule.channels, rule.users) for rule in tools.permissions] == [("python", ["web"], ["alice"])]
    assert _settings("", tmp_path).machine.shell_commands[:2] == ["ls", "cat"]


def test_a_machine_tool_on_an_assistant_open_to_anonymous_callers_is_refused_where_it_is_named():
    text = MINIMAL + "security:\n  anonymous: anywhere\ntools:\n  enabled: [safe, http_fetch, python, shell]\n"
    lines = problems(text)
    assert [line for line in lines if "machine tool" in line] == [
        "spec.yaml:9:31: tools.enabled.2: python is a machine tool and security.anonymous is 'anywhere': anyone "
        "could run it without credentials (hint: set security.anonymous: loopback or off, so callers need a key "
        "or a token)",
        "spec.yaml:9:39: tools.enabled.3: shell is a machine tool and security.anonymous is 'anywhere': anyone "
        "could run it without credentials (hint: set security.anonymous: loopback or off, so callers need a key "
        "or a token)",
    ], lines


def test_anonymous_anywhere_without_machine_tools_and_machine_tools_with_credentials_both_load(tmp_path):
    parse_spec(MINIMAL + "security:\n  anonymous: anywhere\ntools:\n  enabled: [safe, http_fetch]\n", "spec.yaml")
    parse_spec(MINIMAL + "security:\n  anonymous: 'off'\ntools:\n  enabled: [python]\n", "spec.yaml")
    parse_spec(MINIMAL + "tools:\n  enabled: [python]\n", "spec.yaml")  # loopback: the host's own operator


def test_shell_programs_are_names_and_the_workspaces_folder_is_absolute():
    for snippet in (
        "      shell_commands: [/bin/sh]\n",
        "      shell_commands: ['ls;rm']\n",
        "      workspaces_dir: relative/ws\n",
    ):
        lines = problems(MINIMAL + "tools:\n  settings:\n    machine:\n" + snippet)
        assert any("tools.settings.machine" in line for line in lines), (snippet, lines)


def _target(snippet: str, tmp_path) -> Target:
    spec = parse_spec(MINIMAL + snippet, "spec.yaml")
    return Target(spec=spec, host=spec.deploy.hosts[0], root=str(tmp_path), python=sys.executable)


def test_apply_installs_bubblewrap_and_makes_the_workspaces_folder_only_where_machine_tools_are_on(tmp_path):
    on = _target("tools:\n  enabled: [safe, python, workspace_patch]\n", tmp_path)
    assert {"bubblewrap", "patch"} <= set(debian_packages(on))
    assert host_vars(on)["assistant_workspaces"] == f"{tmp_path}/workspaces"
    without_patch = _target("tools:\n  enabled: [shell]\n", tmp_path)
    assert "bubblewrap" in debian_packages(without_patch) and "patch" not in debian_packages(without_patch)
    off = _target("tools:\n  enabled: [safe, http_fetch]\n", tmp_path)
    assert not {"bubblewrap", "patch"} & set(debian_packages(off))
    assert "assistant_workspaces" not in host_vars(off)


def test_the_browser_brings_chromium_and_playwright_only_where_it_is_enabled(tmp_path):
    on = _target("tools:\n  enabled: [safe, browser]\n", tmp_path)
    assert {"bubblewrap", "chromium"} <= set(debian_packages(on))
    needs = engine_needs(on)
    assert [(need.source, need.requirements) for need in needs] == [
        ("tools.enabled: browser", (f"playwright=={metadata.version('playwright')}",))
    ]
    off = _target("tools:\n  enabled: [safe, python]\n", tmp_path)
    assert "chromium" not in debian_packages(off) and engine_needs(off) == []
