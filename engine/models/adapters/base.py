"""What every model adapter is: one interface, the reply and chunk shapes, and the error kinds.

The router only knows this module. An adapter turns a list of chat messages into a `Reply` (or a
stream of `Chunk` lists) and raises `UpstreamError` for anything that went wrong upstream, saying
whether trying again could help.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

# {"role": "system"|"user"|"assistant"|"tool", "content": "..."}, in OpenAI's chat shape: an
# assistant message may carry `tool_calls` (content then may be None), a tool message `tool_call_id`,
# and content may be a list of parts when it holds images (engine/api/bodies.py checks all of it).
Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    usage: Usage
    finish_reason: str = "stop"
    # Tool calls are carried through but not executed yet: the skills runtime will fill this in.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed reply. The last chunk of a stream may carry only usage/finish."""

    delta: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    # OpenAI streaming tool call pieces: [{"index", "id"?, "type"?, "function": {"name"?, "arguments"?}}]
    tool_calls: list[dict[str, Any]] | None = None


class UpstreamError(Exception):
    """The model call failed. `retryable` is true for timeouts, connection errors, 429 and 5xx."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, timeout: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.timeout = timeout


def call_arguments(call: dict[str, Any], provider: str) -> dict[str, Any]:
    """An OpenAI tool call's `arguments` (a JSON string) as the object Anthropic and Ollama want."""
    try:
        arguments = orjson.loads(call["function"]["arguments"] or "{}")
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise UpstreamError(f"a tool call's arguments are not a JSON object, which {provider} needs", retryable=False)
    return arguments


def error_for_status(status: int, body: str) -> UpstreamError:
    retryable = status == 429 or status >= 500
    return UpstreamError(f"upstream {status}: {body[:200]}", retryable=retryable, status=status)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call knobs; `request_id` travels upstream as X-Request-ID."""

    request_id: str = "-"
    max_tokens: int | None = None
    temperature: float | None = None
    # The OpenAI request fields beyond messages that a client sent (tools, tool_choice,
    # parallel_tool_calls, response_format, top_p, stop, seed), checked by engine/api/bodies.py;
    # each adapter passes them on or translates them to its provider's API.
    extra: dict[str, Any] | None = None


class Adapter(Protocol):
    name: str

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply: ...

    def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        """The reply as it arrives: each item is the chunks that came together (never empty); the
        last chunk carries usage and the finish reason."""


def count_words(text: str) -> int:
    """The offline token estimate: whitespace-separated words (used where upstream gives none)."""
    return len(text.split())


def text_of(content: Any) -> str:
    """A message's text: its content string, or its text parts joined (None and images: nothing)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if p.get("type") == "text")
    return ""


def prompt_words(messages: list[Message]) -> int:
    return sum(count_words(text_of(m.get("content"))) for m in messages)


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One tool call as OpenAI's API writes it (arguments: a JSON text)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class WrappedStream:
    """A model stream (router.ModelStream's interface) passed through unchanged; wrappers that add
    one concern (charging tokens, restoring placeholders) override only what they change."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.model: str = stream.model

    @property
    def text(self) -> str:
        return self._stream.text

    @property
    def usage(self) -> Usage:
        return self._stream.usage

    @property
    def finish_reason(self) -> str:
        return self._stream.finish_reason

    async def __aiter__(self) -> AsyncIterator[list[Chunk]]:
        async for chunks in self._stream:
            yield chunks

    async def close(self, error: UpstreamError | None = None) -> None:
        await self._stream.close(error)
