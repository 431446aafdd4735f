"""Ollama's native API: POST {api_base}/api/chat, newline-delimited JSON when streaming.

Tool calls, tool results, images and the OpenAI request fields are translated in ollama_messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ...settings import ModelSettings
from ..upstream import ClientPool, loads, post_json, request_headers, stream_chunks
from . import ollama_messages
from .base import CallOptions, Chunk, Message, Reply, UpstreamError, Usage

DEFAULT_API_BASE = "http://127.0.0.1:11434"


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(int(data.get("prompt_eval_count", 0)), int(data.get("eval_count", 0)))


class OllamaAdapter:
    def __init__(self, settings: ModelSettings, secrets: dict[str, str], clients: ClientPool) -> None:
        self.name = settings.name
        self.settings = settings
        self.client = clients.get(
            settings.api_base or DEFAULT_API_BASE,
            settings.connect_timeout_seconds,
            settings.read_timeout_seconds,
        )

    def _body(self, messages: list[Message], opts: CallOptions, stream: bool) -> dict[str, Any]:
        options: dict[str, Any] = {}
        max_tokens = opts.max_tokens or self.settings.max_tokens
        temperature = opts.temperature if opts.temperature is not None else self.settings.temperature
        if max_tokens:
            options["num_predict"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": ollama_messages.messages(messages),
            "stream": stream,
        }
        if opts.extra:
            body.update(ollama_messages.request_fields(opts.extra, options))
        if options:
            body["options"] = options
        return body

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        data = await post_json(
            self.client, "/api/chat", self._body(messages, opts, False), request_headers(opts.request_id)
        )
        message = data.get("message")
        if not isinstance(message, dict):
            raise UpstreamError("upstream answer has no message", retryable=False)
        calls = ollama_messages.tool_calls(message)
        return Reply(
            text=message.get("content") or "",
            usage=_usage(data),
            finish_reason="tool_calls" if calls else data.get("done_reason") or "stop",
            tool_calls=calls,
        )

    def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        body = self._body(messages, opts, True)
        return stream_chunks(self.client, "/api/chat", body, request_headers(opts.request_id), StreamParser())


class StreamParser:
    """One JSON object per line; the one with `done: true` carries the counts and ends the answer."""

    def __init__(self) -> None:
        self.done = False
        self.last: dict[str, Any] = {}
        self.calls = 0  # tool calls so far: the next one's index

    def feed(self, line: str) -> list[Chunk]:
        event = loads(line)
        if event.get("error"):
            raise UpstreamError(f"upstream error: {event['error']}", retryable=False)
        self.done, self.last = bool(event.get("done")), event
        message = event.get("message") or {}
        delta = message.get("content")
        chunks = [Chunk(delta=delta)] if delta else []
        if message.get("tool_calls"):
            calls = [{"index": i, **c} for i, c in enumerate(ollama_messages.tool_calls(message), self.calls)]
            self.calls += len(calls)
            chunks.append(Chunk(tool_calls=calls))
        return chunks

    def end(self) -> Chunk:
        if not self.done:
            raise UpstreamError("upstream stream ended without done", retryable=True)
        finish = "tool_calls" if self.calls else self.last.get("done_reason") or "stop"
        return Chunk(usage=_usage(self.last), finish_reason=finish)
