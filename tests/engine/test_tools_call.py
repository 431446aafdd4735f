"""`call_tool`: every way a tool call can go wrong ends as an error sentence for the model, never as
an exception; and every call is counted, logged with its request id and audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import Field

from assistantctl.engine import logs
from assistantctl.engine.security.pii import Masker
from assistantctl.engine.settings import ToolPermissionSettings, ToolsSettings
from assistantctl.engine.tools import Arguments, Registry, Tool, ToolError, ToolOutput, call_tool
from test_tools_context import fake_context


class EchoArgs(Arguments):
    text: str = Field(max_length=50, description="what to echo")
    times: int = Field(1, ge=1, le=3)


async def _echo(args: EchoArgs, context) -> str:
    return " ".join([args.text] * args.times)


async def _boom(args: EchoArgs, context) -> str:
    raise KeyError("secret internal detail")


async def _refuse(args: EchoArgs, context) -> str:
    raise ToolError("no such thing")


async def _hang(args: EchoArgs, context) -> str:
    await asyncio.sleep(3600)
    return "never"


async def _flood(args: EchoArgs, context) -> ToolOutput:
    return ToolOutput("x" * 10_000, tainted=True)


async def _network(args: EchoArgs, context) -> ToolOutput:
    return ToolOutput("from afar", tainted=True)


TOOLS = [
    Tool("echo", "Echo a text.", EchoArgs, _echo),
    Tool("boom", "Raises.", EchoArgs, _boom),
    Tool("refuse", "Refuses.", EchoArgs, _refuse),
    Tool("hang", "Hangs.", EchoArgs, _hang),
    Tool("flood", "Too much.", EchoArgs, _flood),
    Tool("far", "Network text.", EchoArgs, _network, risk="network"),
]


def _registry(**settings) -> Registry:
    defaults = {"enabled": [], "step_timeout_seconds": 0.2, "output_limit_bytes": 1000}
    return Registry(TOOLS, ToolsSettings(**(defaults | settings)))


def _count(tool: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("assistant_tool_calls_total", {"tool": tool, "outcome": outcome}) or 0.0


async def test_a_good_call_returns_the_tools_text(tmp_path: Path):
    result = await call_tool(_registry(), "echo", '{"text": "hi", "times": 2}', fake_context(tmp_path))
    assert (result.ok, result.outcome, result.content, result.tainted) == (True, "ok", "hi hi", False)


async def test_empty_arguments_use_the_defaults(tmp_path: Path):
    registry = Registry([Tool("e", "E.", Arguments, lambda args, ctx: _const("fine"))], ToolsSettings(enabled=[]))
    assert (await call_tool(registry, "e", "", fake_context(tmp_path))).content == "fine"


async def _const(text: str) -> str:
    return text


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"times": 2}', "text: Field required"),
        ('{"text": "hi", "times": 9}', "times: Input should be less than or equal to 3"),
        ('{"text": "hi", "colour": "red"}', "colour: Extra inputs are not permitted"),
        ('{"text": "' + "a" * 200_000 + '"}', "longer than"),
    ],
)
async def test_bad_arguments_become_an_error_the_model_can_read(tmp_path: Path, raw: str, words: str):
    result = await call_tool(_registry(), "echo", raw, fake_context(tmp_path))
    assert result.outcome == "invalid_arguments"
    assert result.content.startswith("error: invalid arguments for 'echo'")
    assert words in result.content


async def test_a_tool_that_raises_becomes_an_error_without_its_internals(tmp_path: Path):
    result = await call_tool(_registry(), "boom", '{"text": "x"}', fake_context(tmp_path))
    assert (result.ok, result.outcome) == (False, "error")
    assert result.content == "error: 'boom' failed with an internal error"
    assert "secret" not in result.content


async def test_a_tool_error_carries_the_tools_own_sentence(tmp_path: Path):
    result = await call_tool(_registry(), "refuse", '{"text": "x"}', fake_context(tmp_path))
    assert (result.outcome, result.content) == ("error", "error: 'refuse' failed: no such thing")


async def test_a_hanging_tool_is_cut_off_at_the_step_timeout(tmp_path: Path):
    result = await call_tool(_registry(step_timeout_seconds=0.2), "hang", '{"text": "x"}', fake_context(tmp_path))
    assert result.outcome == "timeout"
    assert "did not finish within 0.2 seconds" in result.content


async def test_too_much_output_is_an_error_not_a_flood(tmp_path: Path):
    result = await call_tool(_registry(output_limit_bytes=1000), "flood", '{"text": "x"}', fake_context(tmp_path))
    assert result.outcome == "too_large"
    assert "10000 bytes, more than the limit of 1000" in result.content
    assert len(result.content) < 200


async def test_network_text_is_marked_tainted(tmp_path: Path):
    result = await call_tool(_registry(), "far", '{"text": "x"}', fake_context(tmp_path))
    assert (result.ok, result.tainted) == (True, True)


async def test_an_unknown_tool_names_the_available_ones(tmp_path: Path):
    result = await call_tool(_registry(), "rm_rf", "{}", fake_context(tmp_path))
    assert result.outcome == "unknown_tool"
    assert "no tool 'rm_rf'" in result.content and "echo" in result.content
    assert result.tool == "unknown"  # a made-up name never becomes a metric label


async def test_permissions_restrict_a_tool_by_channel_and_user(tmp_path: Path):
    rule = ToolPermissionSettings(tool="echo", channels=["web"], users=["alice"])
    registry = _registry(permissions=[rule])
    args = '{"text": "x"}'
    assert (await call_tool(registry, "echo", args, fake_context(tmp_path, user="alice", channel="web"))).ok
    for user, channel in [("bob", "web"), ("alice", "telegram")]:
        result = await call_tool(registry, "echo", args, fake_context(tmp_path, user=user, channel=channel))
        assert result.outcome == "denied"
        assert "echo" not in result.content.split("available:")[1]
    assert "echo" not in [d["function"]["name"] for d in registry.definitions("telegram", "alice")]
    assert "echo" in [d["function"]["name"] for d in registry.definitions("web", "alice")]


async def test_every_call_is_counted_by_tool_and_outcome(tmp_path: Path):
    before = (_count("echo", "ok"), _count("hang", "timeout"), _count("unknown", "unknown_tool"))
    duration_before = REGISTRY.get_sample_value("assistant_tool_call_duration_seconds_count", {"tool": "echo"}) or 0
    await call_tool(_registry(), "echo", '{"text": "x"}', fake_context(tmp_path))
    await call_tool(_registry(), "hang", '{"text": "x"}', fake_context(tmp_path))
    await call_tool(_registry(), "nope", "{}", fake_context(tmp_path))
    after = (_count("echo", "ok"), _count("hang", "timeout"), _count("unknown", "unknown_tool"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    duration_after = REGISTRY.get_sample_value("assistant_tool_call_duration_seconds_count", {"tool": "echo"})
    assert duration_after == duration_before + 1


async def test_every_call_is_logged_with_its_request_id_and_audited(tmp_path: Path):
    audit_file = tmp_path / "audit.log"
    logs.setup(str(tmp_path / "logs"), "info", "json", str(audit_file), Masker([], None))
    try:
        await call_tool(_registry(), "echo", '{"text": "x"}', fake_context(tmp_path))
        await call_tool(_registry(), "refuse", '{"text": "x"}', fake_context(tmp_path))
    finally:
        logs.stop()
    lines = [json.loads(line) for line in (tmp_path / "logs" / "engine.log").read_text().splitlines()]
    tool_lines = [line for line in lines if line["logger"] == "engine.tools"]
    assert [(line["tool"], line["outcome"], line["request_id"]) for line in tool_lines] == [
        ("echo", "ok", "req-test-1"),
        ("refuse", "error", "req-test-1"),
    ]
    assert "no such thing" in tool_lines[1]["msg"]
    audited = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [(a["action"], a["tool"], a["user"], a["outcome"]) for a in audited] == [
        ("tool_call", "echo", "alice", "ok"),
        ("tool_call", "refuse", "alice", "error"),
    ]
