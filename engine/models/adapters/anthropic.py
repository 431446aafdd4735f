"""Anthropic's Messages API: POST {api_base}/v1/messages with x-api-key, SSE events when streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ...settings import ModelSettings
from ..upstream import ClientPool, loads, post_json, request_headers, sse_data, stream_chunks
from .anthropic_messages import finish_reason, request_fields, split_system, tool_calls
from .base import CallOptions, Chunk, Message, Reply, UpstreamError, Usage

DEFAULT_API_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# The Messages API requires max_tokens; this is used when neither the call nor the model sets it.
DEFAULT_MAX_TOKENS = 1024


def messages_path(api_base: str) -> str:
    return "/messages" if api_base.rstrip("/").endswith("/v1") else "/v1/messages"


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
        if opts.extra:
            body.update(request_fields(opts.extra))
        return body

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        data = await post_json(
            self.client, self.path, self._body(messages, opts, False), request_headers(opts.request_id, self.auth)
        )
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise UpstreamError("upstream answer has no content", retryable=False)
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        usage = data.get("usage") or {}
        return Reply(
            text=text,
            usage=Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
            finish_reason=finish_reason(data.get("stop_reason")),
            tool_calls=tool_calls(blocks),
        )

    def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        body = self._body(messages, opts, True)
        headers = request_headers(opts.request_id, self.auth)
        return stream_chunks(self.client, self.path, body, headers, StreamParser())


class StreamParser:
    """Typed SSE events: text deltas, token counts in message_start/message_delta, message_stop.
    A `tool_use` block and its `input_json_delta` pieces become OpenAI tool call pieces."""

    def __init__(self) -> None:
        self.done = False
        self.input_tokens = self.output_tokens = 0
        self.finish: str | None = None
        self.tools: dict[int, int] = {}  # content block index -> OpenAI tool call index

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
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self.tools.get(event.get("index", -1), 0)
                return [Chunk(tool_calls=[{"index": index, "function": {"arguments": delta["partial_json"]}}])]
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools[event.get("index", -1)] = len(self.tools)
                call = {"index": index, "id": block.get("id", ""), "type": "function"}
                return [Chunk(tool_calls=[{**call, "function": {"name": block.get("name", ""), "arguments": ""}}])]
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
        return Chunk(usage=Usage(self.input_tokens, self.output_tokens), finish_reason=finish_reason(self.finish))
