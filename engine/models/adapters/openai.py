"""Any OpenAI-compatible server: POST {api_base}/chat/completions, SSE when streaming.

The engine's messages and request fields are OpenAI's already, so they go upstream as they are, and
the upstream's tool calls (whole, or as streamed pieces) come back as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ...settings import ModelSettings
from ..upstream import ClientPool, loads, post_json, request_headers, sse_data, stream_chunks
from .base import CallOptions, Chunk, Message, Reply, UpstreamError, Usage, count_words, prompt_words

DEFAULT_API_BASE = "https://api.openai.com/v1"


def _usage(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    return Usage(int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0)))


class OpenAIAdapter:
    def __init__(self, settings: ModelSettings, secrets: dict[str, str], clients: ClientPool) -> None:
        self.name = settings.name
        self.settings = settings
        self.client = clients.get(
            settings.api_base or DEFAULT_API_BASE,
            settings.connect_timeout_seconds,
            settings.read_timeout_seconds,
        )
        key = secrets.get(settings.api_key_secret or "", "")
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}

    def _body(self, messages: list[Message], opts: CallOptions, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages, "stream": stream}
        if opts.extra:  # tools, tool_choice, top_p ...: OpenAI's own fields, passed on as the client sent them
            body.update(opts.extra)
        max_tokens = opts.max_tokens or self.settings.max_tokens
        temperature = opts.temperature if opts.temperature is not None else self.settings.temperature
        if max_tokens:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        data = await post_json(
            self.client,
            "/chat/completions",
            self._body(messages, opts, False),
            request_headers(opts.request_id, self.auth),
        )
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise UpstreamError("upstream answer has no choices", retryable=False) from exc
        text = message.get("content") or ""
        usage = _usage(data.get("usage")) or Usage(prompt_words(messages), count_words(text))
        return Reply(
            text=text,
            usage=usage,
            finish_reason=choice.get("finish_reason") or "stop",
            tool_calls=list(message.get("tool_calls") or []),
        )

    def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        body = self._body(messages, opts, True)
        headers = request_headers(opts.request_id, self.auth)
        return stream_chunks(self.client, "/chat/completions", body, headers, StreamParser(messages))


class StreamParser:
    """`data: {chunk}` events until `data: [DONE]`; usage from the last event that has it."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.done = False
        self.usage: Usage | None = None
        self.finish: str | None = None
        self.words = 0

    def feed(self, line: str) -> list[Chunk]:
        payload = sse_data(line)
        if payload is None:
            return []
        if payload == "[DONE]":
            self.done = True
            return []
        event = loads(payload)
        self.usage = _usage(event.get("usage")) or self.usage
        chunks = []
        for choice in event.get("choices") or []:
            self.finish = choice.get("finish_reason") or self.finish
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.words += count_words(content)
                chunks.append(Chunk(delta=content))
            if delta.get("tool_calls"):
                chunks.append(Chunk(tool_calls=delta["tool_calls"]))
        return chunks

    def end(self) -> Chunk:
        usage = self.usage or Usage(prompt_words(self.messages), self.words)
        return Chunk(usage=usage, finish_reason=self.finish or "stop")
