"""The registry: the shipped tools are exactly the names the spec validates against, each offers
the model a described JSON Schema, and only safe tools are on unless settings name others."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from assistantctl.engine.settings import BUILTIN_TOOLS, SAFE_TOOLS, ToolsSettings
from assistantctl.engine.tools import builtin_tools, load_registry


def test_the_registry_holds_exactly_the_tools_the_settings_contract_names():
    tools = builtin_tools()
    assert {name: tool.risk for name, tool in tools.items()} == BUILTIN_TOOLS
    assert len(tools) >= 12


@pytest.mark.parametrize("name", sorted(BUILTIN_TOOLS))
def test_every_tool_offers_a_valid_described_schema(name: str):
    definition = builtin_tools()[name].definition()
    function = definition["function"]
    assert definition["type"] == "function" and function["name"] == name
    assert function["description"].strip()
    schema = function["parameters"]
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False


def test_safe_tools_are_on_by_default_and_network_tools_are_not():
    registry = load_registry(ToolsSettings())
    assert registry.names == SAFE_TOOLS
    assert not {"http_fetch", "web_page_text", "web_search"} & set(registry.names)


def test_settings_choose_the_enabled_tools():
    registry = load_registry(ToolsSettings(enabled=["calculator", "http_fetch"]))
    assert [d["function"]["name"] for d in registry.definitions("web", "anyone")] == ["calculator", "http_fetch"]


def test_an_unknown_tool_in_the_settings_is_refused_at_load():
    with pytest.raises(ValueError, match="unknown tools: calculater"):
        load_registry(ToolsSettings(enabled=["calculater"]))


def test_a_permission_rule_restricts_a_tool_that_comes_from_a_source():
    """MCP servers' and skill folders' tools join through sources; a rule naming one applies to it."""
    from assistantctl.engine.settings import ToolPermissionSettings
    from assistantctl.engine.tools import Arguments, Tool
    from assistantctl.engine.tools.loop import offered

    async def run(args, context):
        return "done"

    tool = Tool("skill_report", "Makes the weekly report.", Arguments, run, risk="machine")

    class Source:
        def tools(self):
            return {tool.name: tool}

    rule = ToolPermissionSettings(tool="skill_report", users=["alice"], channels=["web"])
    registry = load_registry(ToolsSettings(enabled=[], permissions=[rule]), sources=[Source()])
    assert registry.allowed("skill_report", "web", "alice")
    assert not registry.allowed("skill_report", "web", "bob")
    assert not registry.allowed("skill_report", "telegram", "alice")
    assert [d["function"]["name"] for d in offered(registry, "web", "alice")] == ["skill_report"]
    assert offered(registry, "web", "bob") == []
