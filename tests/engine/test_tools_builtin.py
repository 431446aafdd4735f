"""The safe built-in tools, called the way the loop will call them: `call_tool` with JSON text."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from assistantctl.engine.settings import SAFE_TOOLS, NotesToolSettings, ToolsSettings
from assistantctl.engine.tools import ToolResult, call_tool, load_registry
from test_tools_context import FakeServices, fake_context

REGISTRY = load_registry(ToolsSettings(enabled=SAFE_TOOLS))


async def _call(tmp_path: Path, tool: str, args: dict, **context) -> ToolResult:
    return await call_tool(REGISTRY, tool, json.dumps(args), fake_context(tmp_path, **context))


async def _ok(tmp_path: Path, tool: str, args: dict, **context) -> str:
    result = await _call(tmp_path, tool, args, **context)
    assert result.ok, result.content
    assert not result.tainted
    return result.content


async def _error(tmp_path: Path, tool: str, args: dict, **context) -> str:
    result = await _call(tmp_path, tool, args, **context)
    assert result.outcome == "error", result.content
    return result.content


# -- time and dates -------------------------------------------------------------------------------


async def test_current_time_is_now_in_the_asked_timezone(tmp_path: Path):
    text = await _ok(tmp_path, "current_time", {"timezone": "Asia/Tokyo"})
    shown = datetime.fromisoformat(text.split(" ")[0])
    assert shown.utcoffset() == timedelta(hours=9)
    assert abs(shown - datetime.now(UTC)) < timedelta(minutes=1)


async def test_an_unknown_timezone_is_a_clear_error(tmp_path: Path):
    assert "no timezone 'Mars/Olympus'" in await _error(tmp_path, "current_time", {"timezone": "Mars/Olympus"})


async def test_convert_timezone_follows_daylight_saving(tmp_path: Path):
    summer = {"time": "2026-07-01T12:00", "from_timezone": "Europe/Paris", "to_timezone": "America/New_York"}
    winter = {**summer, "time": "2026-01-15T12:00"}
    assert (await _ok(tmp_path, "convert_timezone", summer)).startswith("2026-07-01T06:00:00-04:00")
    assert (await _ok(tmp_path, "convert_timezone", winter)).startswith("2026-01-15T06:00:00-05:00")


async def test_date_add_counts_calendar_months(tmp_path: Path):
    text = await _ok(tmp_path, "date_add", {"start": "2026-01-31", "months": 1, "days": 1})
    assert text.startswith("2026-03-01T00:00:00+00:00 (Sunday")


async def test_date_add_refuses_to_leave_the_calendar(tmp_path: Path):
    assert "years 1 to 9999" in await _error(tmp_path, "date_add", {"start": "9999-12-01", "years": 5})


async def test_date_diff_gives_calendar_units_and_a_total(tmp_path: Path):
    text = await _ok(tmp_path, "date_diff", {"start": "2024-02-28", "end": "2025-03-01T06:00"})
    assert text.startswith("1 years, 1 days, 6 hours")
    assert "total 367 days" in text


async def test_a_date_that_is_not_iso_is_a_clear_error(tmp_path: Path):
    assert "not an ISO 8601" in await _error(tmp_path, "date_diff", {"start": "next tuesday", "end": "2026-01-01"})


# -- calculator and units -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [("(3.5 + 2) * sqrt(16)", "22.0"), ("2**64", "18446744073709551616"), ("round(pi, 3)", "3.142"), ("7 % 3", "1")],
)
async def test_the_calculator_calculates(tmp_path: Path, expression: str, value: str):
    assert await _ok(tmp_path, "calculator", {"expression": expression}) == value


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("9**9**9", "too large"),
        ("(10**300)**20", "too large"),
        ("'a' * 10**9", "only numbers"),
        ("[1] * 10**9", "not arithmetic"),
        ("__import__('os').system('id')", "only the listed functions"),
        ("().__class__", "not arithmetic"),
        ("open('/etc/passwd')", "only numbers"),
        ("exit(1)", "not defined"),
        ("1/0", "division by zero"),
        ("factorial(100000)", "0 to 500"),
    ],
)
async def test_the_calculator_refuses_what_is_not_plain_arithmetic(tmp_path: Path, expression: str, words: str):
    assert words in await _error(tmp_path, "calculator", {"expression": expression})


async def test_the_calculator_refuses_long_input(tmp_path: Path):
    result = await _call(tmp_path, "calculator", {"expression": "1+" * 200 + "1"})
    assert result.outcome == "invalid_arguments"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ({"value": 100, "from_unit": "degC", "to_unit": "degF"}, "100 degC = 212 degF"),
        ({"value": 26.2, "from_unit": "mile", "to_unit": "km"}, "26.2 mile = 42.1648128 km"),
        ({"value": 1, "from_unit": "kWh", "to_unit": "MJ"}, "1 kWh = 3.6 MJ"),
    ],
)
async def test_units_convert(tmp_path: Path, args: dict, text: str):
    assert await _ok(tmp_path, "convert_units", args) == text


async def test_units_of_different_dimensions_do_not_convert(tmp_path: Path):
    text = await _error(tmp_path, "convert_units", {"value": 1, "from_unit": "kg", "to_unit": "metre"})
    assert "different dimensions" in text
    assert "unknown unit" in await _error(tmp_path, "convert_units", {"value": 1, "from_unit": "blarg", "to_unit": "m"})


# -- random ---------------------------------------------------------------------------------------


async def test_random_numbers_stay_in_their_bounds(tmp_path: Path):
    text = await _ok(tmp_path, "random_number", {"minimum": 5, "maximum": 7, "count": 100})
    numbers = [int(n) for n in text.split(", ")]
    assert len(numbers) == 100 and set(numbers) <= {5, 6, 7} and len(set(numbers)) > 1
    result = await _call(tmp_path, "random_number", {"minimum": 9, "maximum": 1})
    assert result.outcome == "invalid_arguments" and "minimum must not be larger" in result.content


async def test_uuids_are_fresh_version_4(tmp_path: Path):
    values = (await _ok(tmp_path, "uuid", {"count": 3})).splitlines()
    assert len(set(values)) == 3 and all(uuid.UUID(v).version == 4 for v in values)


# -- notes ----------------------------------------------------------------------------------------


async def test_notes_are_kept_per_user(tmp_path: Path):
    assert re.fullmatch(r"saved as note \d+", await _ok(tmp_path, "notes_save", {"text": "alice's door code"}))
    await _ok(tmp_path, "notes_save", {"text": "bob's bank"}, user="bob")
    alice = await _ok(tmp_path, "notes_list", {})
    assert "alice's door code" in alice and "bob" not in alice
    assert "bob's bank" in await _ok(tmp_path, "notes_list", {}, user="bob")
    assert await _ok(tmp_path, "notes_list", {}, user="carol") == "no notes"
    assert "door code" in await _ok(tmp_path, "notes_list", {"contains": "DOOR"})
    assert await _ok(tmp_path, "notes_list", {"contains": "bank"}) == "no notes"


async def test_a_user_cannot_delete_another_users_note(tmp_path: Path):
    saved = await _ok(tmp_path, "notes_save", {"text": "bob's secret"}, user="bob")
    note_id = int(saved.rsplit(" ", 1)[1])
    assert f"you have no note {note_id}" in await _error(tmp_path, "notes_delete", {"id": note_id}, user="mallory")
    assert "bob's secret" in await _ok(tmp_path, "notes_list", {}, user="bob")
    assert await _ok(tmp_path, "notes_delete", {"id": note_id}, user="bob") == f"deleted note {note_id}"
    assert await _ok(tmp_path, "notes_list", {}, user="bob") == "no notes"


async def test_notes_keep_to_their_limits(tmp_path: Path):
    settings = ToolsSettings(notes=NotesToolSettings(max_notes_per_user=2, max_note_chars=10))
    assert "at most 10 characters" in await _error(tmp_path, "notes_save", {"text": "x" * 11}, settings=settings)
    for _ in range(2):
        await _ok(tmp_path, "notes_save", {"text": "short"}, settings=settings)
    assert "delete some first" in await _error(tmp_path, "notes_save", {"text": "one more"}, settings=settings)
    await _ok(tmp_path, "notes_save", {"text": "other"}, settings=settings, user="bob")  # bob has his own count


# -- tools that use the engine's services ---------------------------------------------------------


async def test_send_message_goes_through_the_contexts_channel(tmp_path: Path):
    services = FakeServices()
    text = await _ok(tmp_path, "send_message", {"text": "halfway there"}, services=services, channel="telegram")
    assert services.sent == ["halfway there"]
    assert text == "sent to alice on telegram"


async def test_summarize_sends_the_conversation_to_the_model(tmp_path: Path):
    services = FakeServices(answer="They planned a trip to Lyon.")
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Let's go to Lyon in May"},
        {"role": "assistant", "content": "Lyon in May it is"},
    ]
    text = await _ok(tmp_path, "summarize_conversation", {"focus": "dates"}, services=services, messages=messages)
    assert text == "They planned a trip to Lyon."
    [prompt] = services.prompts
    assert prompt[0]["role"] == "system" and "dates" in prompt[0]["content"]
    assert prompt[1]["content"] == "user: Let's go to Lyon in May\nassistant: Lyon in May it is"
    assert "be brief" not in prompt[1]["content"]


async def test_summarize_without_a_conversation_is_a_clear_error(tmp_path: Path):
    assert "no conversation" in await _error(tmp_path, "summarize_conversation", {})


async def test_translate_asks_the_model_for_the_target_language(tmp_path: Path):
    services = FakeServices(answer="Guten Morgen")
    text = await _ok(tmp_path, "translate", {"text": "Good morning", "target_language": "German"}, services=services)
    assert text == "Guten Morgen"
    [prompt] = services.prompts
    assert "into German" in prompt[0]["content"] and prompt[1] == {"role": "user", "content": "Good morning"}


async def test_generate_code_asks_for_the_language(tmp_path: Path):
    services = FakeServices(answer="```rust\nfn main() {}\n```")
    text = await _ok(tmp_path, "generate_code", {"task": "an empty program", "language": "rust"}, services=services)
    assert text.startswith("```rust")
    assert "Write rust code" in services.prompts[0][0]["content"]


async def test_an_empty_model_answer_is_an_error(tmp_path: Path):
    services = FakeServices(answer="  ")
    text = await _error(tmp_path, "translate", {"text": "hi", "target_language": "French"}, services=services)
    assert "no answer" in text
