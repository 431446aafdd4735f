"""The offline model: a deterministic function of the conversation, for demos and tests.

It never touches the network. The reply names itself so nobody mistakes it for a real model, echoes
the text of the user's last message, and streams word by word. Tokens are whitespace-separated words.

It knows two tools, so that a tool works with no API key: when the request offers them (and
tool_choice is not "none"), "what is 6*7?" asks for `calculator` and "what time is it in Tokyo?"
for `current_time` (a place is matched against the IANA zone names). Given the tools' results
after the user's last message it answers with them ("6*7 = 42"). Images are ignored.
"""

from __future__ import annotations

import functools
import json
import re
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

from ...settings import ModelSettings
from .base import CallOptions, Chunk, Message, Reply, Usage, count_words, prompt_words, text_of, tool_call

# An arithmetic expression: digits and operators, with at least one operator between two numbers.
_ARITHMETIC = re.compile(r"[-+(]*\d[\d.\s()]*(?:(?:\*\*|[-+*/%^])[\s(]*\d[\d.\s()]*)+")
_ASKS_SUM = re.compile(r"\b(?:what(?:'s| is)|calculate|compute|how much is)\b", re.IGNORECASE)
_TIME_IN = re.compile(r"\btime\b.*?\bin\s+([A-Za-z][A-Za-z _-]*[A-Za-z])", re.IGNORECASE)


def builtin_answer(messages: list[Message]) -> str:
    last = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    turns = sum(1 for m in messages if m.get("role") == "user")
    text = " ".join(last.split()) or "(empty message)"
    return (
        f'You said: "{text}". I am the builtin offline model, so I can only echo you '
        f"(turn {turns}); configure an upstream model for real answers."
    )


@functools.cache
def _zones() -> dict[str, str]:
    """Place name (lower case, spaces for underscores) -> IANA zone, read once from the tz database."""
    zones = {}
    for name in sorted(zoneinfo.available_timezones()):
        if "/" in name and not name.startswith(("Etc/", "SystemV/")):
            zones.setdefault(name.rsplit("/", 1)[1].replace("_", " ").lower(), name)
    return zones


def wanted_call(messages: list[Message], opts: CallOptions) -> tuple[str, dict[str, Any]] | None:
    """The tool the builtin model asks for, if the request offers it and the last message calls for it."""
    extra = opts.extra
    if not extra or not extra.get("tools") or extra.get("tool_choice") == "none" or not messages:
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    offered = {t.get("function", {}).get("name") for t in extra["tools"]}
    text = text_of(last.get("content"))
    if "current_time" in offered and (match := _TIME_IN.search(text)):
        zone = _zones().get(match.group(1).strip().lower())
        if zone:
            return "current_time", {"timezone": zone}
    if "calculator" in offered and _ASKS_SUM.search(text) and (match := _ARITHMETIC.search(text)):
        return "calculator", {"expression": " ".join(match.group(0).replace("^", "**").split())}
    return None


def _results_answer(messages: list[Message]) -> str | None:
    """The answer from the tool results after the user's last message, or None when there are none."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    lines = []
    for m in messages:
        if m.get("role") == "user":
            calls, lines = {}, []
        for call in m.get("tool_calls") or ():
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            calls[call.get("id", "")] = (function.get("name", ""), arguments if isinstance(arguments, dict) else {})
        if m.get("role") == "tool":
            name, arguments = calls.get(m.get("tool_call_id", ""), ("a tool", {}))
            lines.append(_sentence(name, arguments, text_of(m.get("content"))))
    return " ".join(lines) if lines else None


def _sentence(name: str, arguments: dict[str, Any], result: str) -> str:
    if result.startswith("error:"):
        return f"The {name} tool failed ({result[6:].strip()})."
    if name == "calculator":
        return f"{arguments.get('expression', '?')} = {result}"
    if name == "current_time":
        return f"The time in {arguments.get('timezone', 'UTC')} is {result}."
    return f"{name} says: {result}"


class BuiltinAdapter:
    def __init__(self, settings: ModelSettings, secrets: dict[str, str], clients: object) -> None:
        self.name = settings.name
        self.max_tokens = settings.max_tokens

    def _answer(self, messages: list[Message], opts: CallOptions) -> list[str]:
        answer = _results_answer(messages) if any(m.get("role") == "tool" for m in messages) else None
        words = (answer or builtin_answer(messages)).split()
        limit = opts.max_tokens or self.max_tokens
        return words[:limit] if limit else words

    def _call(self, messages: list[Message], opts: CallOptions) -> dict[str, Any] | None:
        wanted = wanted_call(messages, opts)
        if wanted is None:
            return None
        name, arguments = wanted
        number = sum(len(m.get("tool_calls") or ()) for m in messages) + 1
        return tool_call(f"call_builtin_{number}", name, json.dumps(arguments))

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        call = self._call(messages, opts)
        if call is not None:
            usage = Usage(prompt_words(messages), count_words(call["function"]["arguments"]))
            return Reply(text="", usage=usage, finish_reason="tool_calls", tool_calls=[call])
        words = self._answer(messages, opts)
        return Reply(text=" ".join(words), usage=Usage(prompt_words(messages), len(words)))

    async def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        call = self._call(messages, opts)
        if call is not None:
            usage = Usage(prompt_words(messages), count_words(call["function"]["arguments"]))
            yield [Chunk(tool_calls=[{"index": 0, **call}]), Chunk(usage=usage, finish_reason="tool_calls")]
            return
        words = self._answer(messages, opts)
        chunks = [Chunk(delta=word if i == 0 else " " + word) for i, word in enumerate(words)]
        yield [*chunks, Chunk(usage=Usage(prompt_words(messages), len(words)), finish_reason="stop")]
