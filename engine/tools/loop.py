"""The engine's own tool loop, for /api/v1/chat, its SSE stream, the websocket and the channels.

The model is offered the tools the caller may use (`offered`). When its reply asks for tools, the
calls run at once, in parallel, each through `call_tool` (which turns any failure, hang or
oversized answer into an error text for the model); the assistant message with its `tool_calls`
and one `tool` message per call go back to the model, and so on for up to `tools.max_steps`
steps. After that the model is asked once more with `tool_choice: none`; a model that still asks
for tools ends the request with finish reason `max_steps`.

Each call is announced as an event, `started` then `finished` (outcome ok) or `failed`, which the
SSE stream and the websocket relay (engine/api/openapi_events.py documents them). A machine tool
that needs the user's approval (engine/tools/approval.py) waits for it in between, with
`approval` events (asked, approved, declined, timeout, unavailable); the request is tainted from
the step after a tool result marked tainted (or from the start when the conversation holds one).
`added` holds the messages the loop produced, for the history (engine/history/sqlite.py stores
them as tool rows).

/v1/chat/completions never comes here: there the client runs its own tools.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..models.adapters.base import CallOptions, Chunk, Message, Reply, Usage
from .approval import Ask, Gate, carries_taint, store_for
from .base import Context, Tool
from .call import call_tool
from .registry import Registry

Event = dict[str, Any]
PREVIEW_CHARS = 200
STOPPED_TEXT = "(stopped: the model asked for more tool steps than tools.max_steps allows)"
_BROKEN: Event = {"event": "failed", "outcome": "error"}


@functools.lru_cache(maxsize=512)
def _definition(tool: Tool) -> dict[str, Any]:
    # A tool's JSON Schema costs pydantic a schema build each time: once per tool is enough.
    return tool.definition()


def offered(registry: Registry | None, channel: str, user: str) -> list[dict[str, Any]]:
    """The OpenAI `tools` list this caller may be offered (empty: no loop, the plain path).

    On every request's path: without permission rules every caller gets the same list, kept until
    the tools themselves change (an MCP server's tools come and go)."""
    if registry is None:
        return []
    tools = registry.tools
    if not tools:
        return []
    if registry.settings.permissions:
        return [_definition(tool) for name, tool in tools.items() if registry.allowed(name, channel, user)]
    current = tuple(tools.values())
    cached = registry.offered_to_everyone
    same = cached is not None and len(cached[0]) == len(current)
    if not (same and all(a is b for a, b in zip(cached[0], current, strict=True))):
        cached = registry.offered_to_everyone = (current, [_definition(tool) for tool in current])
    return cached[1]


class Assembler:
    """Streamed tool call pieces, keyed by `index`, put together into whole calls.

    `pick` is relay_deltas' chunk picker: it keeps the pieces and lets the text through."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def pick(self, chunks: list[Chunk]) -> list[str]:
        texts = []
        for chunk in chunks:
            if chunk.tool_calls:
                self.add(chunk.tool_calls)
            if chunk.delta:
                texts.append(chunk.delta)
        return texts

    def add(self, pieces: list[dict[str, Any]]) -> None:
        for piece in pieces:
            index = piece.get("index")
            slot = self._calls.setdefault(
                index if isinstance(index, int) else len(self._calls), {"id": "", "name": "", "arguments": ""}
            )
            if piece.get("id"):
                slot["id"] = piece["id"]
            function = piece.get("function") or {}
            name = function.get("name")
            if name and name != slot["name"]:  # a name comes whole; some servers repeat it
                slot["name"] += name
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                slot["arguments"] += arguments
            elif isinstance(arguments, dict):  # already an object: keep it as the JSON text OpenAI uses
                slot["arguments"] = _json_text(arguments)

    def take(self) -> list[dict[str, Any]]:
        """The whole calls in index order (ids made up where a provider gave none); resets."""
        calls = [
            {
                "id": slot["id"] or f"call_{index}",
                "type": "function",
                "function": {"name": slot["name"], "arguments": slot["arguments"]},
            }
            for index, slot in sorted(self._calls.items())
        ]
        self._calls = {}
        return calls


def _json_text(value: Any) -> str:
    from ..jsonio import dumps  # noqa: PLC0415 - only for the rare provider that sends objects

    return dumps(value).decode()


@dataclass
class ToolLoop:
    """One request's tool loop. `complete` is one plain model call (the tools' own `complete`),
    `send` a message to the user through the request's channel (by default kept in `sent`, for
    the endpoint to pass on). `ask` puts an approval question to the user through the channel
    (None: the channel cannot ask, and calls that need approval are refused); `chat` is where a
    plain yes/no answers it (a webhook's conversation; by default this request)."""

    registry: Registry
    tools: list[dict[str, Any]]
    user: str
    channel: str
    request_id: str
    data_dir: Path
    complete: Callable[[list[Message]], Awaitable[str]]
    send: Callable[[str], Awaitable[None]] | None = None
    ask: Ask | None = None
    chat: str | None = None
    sent: list[str] = field(default_factory=list)
    tainted: bool | None = None  # None until the first step has looked at the conversation
    added: list[Message] = field(default_factory=list)
    summaries: list[Event] = field(default_factory=list)
    steps: int = 0
    usage: Usage = Usage()

    @property
    def max_steps(self) -> int:
        return self.registry.settings.max_steps

    def options(self, base: CallOptions) -> CallOptions:
        """`base` with the tools offered, or with `tool_choice: none` once the steps are used up."""
        extra = {**(base.extra or {}), "tools": self.tools}
        if self.steps >= self.max_steps:
            extra["tool_choice"] = "none"
        return replace(base, extra=extra)

    def count(self, usage: Usage) -> None:
        self.usage = Usage(self.usage.input_tokens + usage.input_tokens, self.usage.output_tokens + usage.output_tokens)

    def wants_tools(self, tool_calls: list[dict[str, Any]]) -> bool:
        """Whether to run `tool_calls`: there are some and steps are left."""
        return bool(tool_calls) and self.steps < self.max_steps

    async def step(
        self, text: str, tool_calls: list[dict[str, Any]], conversation: list[Message]
    ) -> AsyncIterator[Event]:
        """Run the calls of one model turn in parallel, giving their events as they happen; the
        turn's messages are then in `added`. Closing the iterator early cancels the calls."""
        self.steps += 1
        if self.tainted is None:
            self.tainted = carries_taint(conversation, self._safe)
        self.added.append({"role": "assistant", "content": text or None, "tool_calls": tool_calls})
        seen = [*conversation, *self.added]
        for call in tool_calls:
            yield {"event": "started", "call_id": _call_id(call), "name": _name(call)}
        # Calls of one step were chosen together, before any of their results: a result tainted in
        # this step taints the next steps' calls, not its siblings'.
        gate = self._gate()
        events: asyncio.Queue[Event] = asyncio.Queue()
        tasks = [asyncio.ensure_future(self._one(call, seen, gate, events.put_nowait)) for call in tool_calls]
        for task in tasks:  # a call that raised (call_tool never does) must not leave the step waiting
            task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or events.put_nowait(_BROKEN))
        try:
            left = len(tasks)
            while left:
                item = await events.get()
                left -= item["event"] in ("finished", "failed")
                yield item
        finally:
            for task in tasks:
                task.cancel()
        results = [task.result() for task in tasks]
        self.added.extend(message for message, _ in results)
        self.tainted = self.tainted or any(tainted for _, tainted in results)

    def _safe(self, name: str) -> bool:
        tool = self.registry.get(name)
        return tool is not None and tool.risk == "safe"

    def _gate(self) -> Gate:
        return Gate(
            self.registry.settings.approval,
            store_for(self.data_dir),
            self.user,
            self.channel,
            self.chat or self.request_id,
            self.request_id,
            self.ask,
            bool(self.tainted),
        )

    async def _one(
        self, call: dict[str, Any], seen: list[Message], gate: Gate, emit: Callable[[Event], None]
    ) -> tuple[Message, bool]:
        name, call_id = _name(call), _call_id(call)
        context = Context(
            self.user,
            self.channel,
            self.request_id,
            seen,
            self.data_dir,
            self.registry.settings,
            self.complete,
            self.send or self._keep,
        )
        started = time.perf_counter()

        async def approve(tool: Tool, arguments: str | None) -> str | None:
            return await gate.check(tool, arguments, call_id, emit)

        result = await call_tool(self.registry, name, (call.get("function") or {}).get("arguments"), context, approve)
        summary = {
            "event": "finished" if result.ok else "failed",
            "call_id": call_id,
            "name": name,
            "outcome": result.outcome,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "preview": result.content[:PREVIEW_CHARS],
        }
        self.summaries.append(summary)
        emit(summary)
        return {"role": "tool", "tool_call_id": call_id, "content": result.content}, result.tainted

    async def _keep(self, text: str) -> None:
        self.sent.append(text)

    def final_text(self, text: str, stopped: bool) -> str:
        """A streamed loop's answer: `stopped` when the model still wanted tools after max_steps."""
        return (text or STOPPED_TEXT) if stopped else text

    def final(self, reply: Reply) -> Reply:
        """The reply the request ends with: a model that still asks for tools is stopped."""
        if not reply.tool_calls:
            # No tool step: the one call's usage is the loop's (no copy on the common path).
            return reply if self.steps == 0 else replace(reply, usage=self.usage)
        return replace(
            reply, text=reply.text or STOPPED_TEXT, tool_calls=[], finish_reason="max_steps", usage=self.usage
        )


def _name(call: dict[str, Any]) -> str:
    return str((call.get("function") or {}).get("name") or "")


def _call_id(call: dict[str, Any]) -> str:
    return str(call.get("id") or "")
