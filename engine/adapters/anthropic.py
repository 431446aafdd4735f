"""Anthropic's Messages API: POST {api_base}/v1/messages with x-api-key, SSE events when streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..settings import ModelSettings
from ..upstream import ClientPool, loads, post_json, request_headers, sse_data, stream_chunks
from .base import CallOptions, Chunk, Message, Reply, UpstreamError, Usage

DEFAULT_API_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# The Messages API requires max_tokens; this is used when neither the call nor the model sets it.
DEFAULT_MAX_TOKENS = 1024


def messages_path(api_base: str) -> str:
    return "/messages" if api_base.rstrip("/").endswith("/v1") else "/v1/messages"


def split_system(messages: list[Message]) -> tuple[str, list[Message]]:
    """Anthropic takes system prompts as a top-level field, not as a message."""
    system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system")
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    return system, rest


class AnthropicAdapter:
    def __init__(self, settings: ModelSettings, secrets: dict[str, str], clients: ClientPool) -> None:
        self.name = settings.name
        self.settings = settings
        base = settings.api_base or DEFAULT_API_BASE
        self.path = messages_path(base)
        self.client = clients.get(base, settings.connect_timeout_seconds, settings.read_timeout_seconds)
        self.auth = {
            "x-api-key": secrets.get(settings.api_key_secret or "", ""),
            "anthropic-version": API_VERSION,
        }

    def _body(self, messages: list[Message], opts: CallOptions, stream: bool) -> dict[str, Any]:
        system, rest = split_system(messages)
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": rest,
            "max_tokens": opts.max_tokens or self.settings.max_tokens or DEFAULT_MAX_TOKENS,
            "stream": stream,
        }
        temperature = opts.temperature if opts.temperature is not None else self.settings.temperature
        if temperature is not None:
            body["temperature"] = temperature
        if system:
            body["system"] = system
        return body

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        data = await post_json(
            self.client, self.path, self._body(messages, opts, False), request_headers(opts.request_id, self.auth)
        )
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise UpstreamError("upstream answer has no content", retryable=False)
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        tools = [b for b in blocks if b.get("type") == "tool_use"]
        usage = data.get("usage") or {}
        return Reply(
            text=text,
            usage=Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
            finish_reason=data.get("stop_reason") or "stop",
            tool_calls=tools,
        )

    def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        body = self._body(messages, opts, True)
        headers = request_headers(opts.request_id, self.auth)
        return stream_chunks(self.client, self.path, body, headers, StreamParser())


class StreamParser:
    """Typed SSE events: text deltas, token counts in message_start/message_delta, message_stop."""

    def __init__(self) -> None:
        self.done = False
        self.input_tokens = self.output_tokens = 0
        self.finish: str | None = None

    def feed(self, line: str) -> list[Chunk]:
        payload = sse_data(line)
        if payload is None:
            return []
        event = loads(payload)
        kind = event.get("type")
        if kind == "message_start":
            self.input_tokens = int(((event.get("message") or {}).get("usage") or {}).get("input_tokens", 0))
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [Chunk(delta=delta["text"])]
        elif kind == "message_delta":
            self.output_tokens = int((event.get("usage") or {}).get("output_tokens", self.output_tokens))
            self.finish = (event.get("delta") or {}).get("stop_reason") or self.finish
        elif kind == "error":
            message = (event.get("error") or {}).get("message", "stream error")
            raise UpstreamError(f"upstream error event: {message}", retryable=False)
        elif kind == "message_stop":
            self.done = True
        return []

    def end(self) -> Chunk:
        return Chunk(usage=Usage(self.input_tokens, self.output_tokens), finish_reason=self.finish or "stop")
