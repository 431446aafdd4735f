"""Which model answers: the default (or requested) one, then the fallback chain.

Per model: skip it while its breaker is open, wait for a slot in its gate (bounded, prioritised),
call it, retry with exponential backoff and full jitter on retryable errors only, and record the
outcome in metrics and the `engine.model` log. Streams fall back only before their first chunk:
after that the client already has part of an answer. A request holding an image falls back only to
models whose `input` says they read images: another would answer blind to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .. import logs, metrics
from .adapters.base import CallOptions, Chunk, Message, Reply, UpstreamError, Usage
from .catalog import Catalog, ModelEntry
from .gate import QueueFull

T = TypeVar("T")
_MAX_BACKOFF = 2.0


class NoModelAvailable(Exception):
    """Every model in the chain was skipped (breaker open) or refused (queue full): 503."""


class AllModelsFailed(Exception):
    """Every model in the chain failed: 502, or 504 when the last failure was a timeout."""

    def __init__(self, last: UpstreamError) -> None:
        super().__init__(str(last))
        self.last = last


@dataclass(slots=True)
class Trace:
    """What the router did for one request, for logs and for the caller's timeout handling."""

    request_id: str = "-"
    user: str = "-"
    model: str | None = None  # the model being called right now (or the one that answered)
    started: float = 0.0
    tried: list[str] = field(default_factory=list)


class Router:
    def __init__(self, retries: int, backoff: float) -> None:
        self.retries = retries
        self.backoff = backoff

    async def chat(
        self,
        catalog: Catalog,
        requested: str | None,
        messages: list[Message],
        opts: CallOptions,
        trace: Trace,
        priority: int = 0,
    ) -> tuple[str, Reply]:
        async def call(entry: ModelEntry) -> tuple[str, Reply]:
            reply = await entry.adapter.chat(messages, opts)
            metrics.record_tokens(entry.name, reply.usage.input_tokens, reply.usage.output_tokens)
            return entry.name, reply

        return await self._walk(catalog, requested, trace, priority, call, messages)

    async def stream(
        self,
        catalog: Catalog,
        requested: str | None,
        messages: list[Message],
        opts: CallOptions,
        trace: Trace,
        priority: int = 0,
    ) -> ModelStream:
        """Open a stream on the first model that produces a first chunk; the caller must `close()` it."""

        async def call(entry: ModelEntry) -> ModelStream:
            started = time.monotonic()
            chunks = aiter(entry.adapter.stream(messages, opts))
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                first = [Chunk(usage=Usage(), finish_reason="stop")]
            except BaseException:
                await chunks.aclose()
                raise
            metrics.child(metrics.TIME_TO_FIRST_TOKEN, entry.name).observe(time.monotonic() - started)
            return ModelStream(entry, chunks, first, trace, started)

        return await self._walk(catalog, requested, trace, priority, call, messages, hold=True)

    async def _walk(
        self,
        catalog: Catalog,
        requested: str | None,
        trace: Trace,
        priority: int,
        call: Callable[[ModelEntry], Awaitable[T]],
        messages: list[Message],
        hold: bool = False,
    ) -> T:
        last_error: UpstreamError | None = None
        for position, entry in enumerate(catalog.chain(requested)):
            # looked at only when falling back: most requests end with the first model
            if position > 0 and "image" not in entry.settings.input and holds_images(messages):
                _record(entry.name, "rejected", trace, 0.0, "does not read images")
                continue
            for attempt in range(self.retries + 1):
                try:
                    return await self._attempt(entry, trace, priority, call, hold)
                except _Skipped:
                    break
                except UpstreamError as exc:
                    last_error = exc
                    if not exc.retryable or attempt == self.retries or not entry.breaker.available():
                        break
                    await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF, self.backoff * 2**attempt)))
        if last_error is None:
            raise NoModelAvailable("no model can take the request now")
        raise AllModelsFailed(last_error)

    async def _attempt(
        self,
        entry: ModelEntry,
        trace: Trace,
        priority: int,
        call: Callable[[ModelEntry], Awaitable[T]],
        hold: bool,
    ) -> T:
        if not entry.breaker.begin():
            _record(entry.name, "rejected", trace, 0.0, "breaker open")
            raise _Skipped()
        try:
            await entry.gate.acquire(priority)
        except QueueFull:
            entry.breaker.release()
            _record(entry.name, "rejected", trace, 0.0, "queue full")
            raise _Skipped() from None
        except BaseException:
            entry.breaker.release()
            raise
        trace.model = entry.name
        trace.tried.append(entry.name)
        started = time.monotonic()
        try:
            result = await call(entry)
        except UpstreamError as exc:
            entry.gate.release()
            entry.breaker.failure()
            _record(entry.name, "timeout" if exc.timeout else "error", trace, started, str(exc))
            raise
        except BaseException:
            entry.gate.release()
            entry.breaker.release()  # cancelled (client gone, request timeout): no verdict on the model
            raise
        if hold:  # a stream keeps its slot: ModelStream.close() releases it and gives the verdict
            return result
        entry.gate.release()
        entry.breaker.success()
        _record(entry.name, "success", trace, started)
        return result


class _Skipped(Exception):
    pass


def holds_images(messages: list[Message]) -> bool:
    """Whether any message carries an image part (OpenAI's `image_url`, as the engine keeps them)."""
    return any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in messages
        if isinstance(content := message.get("content"), list)
        for part in content
    )


class ModelStream:
    """A stream that has produced its first chunks; holds the model's gate slot until closed.
    Iterating it gives lists of chunks, as the adapter delivered them."""

    def __init__(
        self, entry: ModelEntry, chunks: AsyncIterator[list[Chunk]], first: list[Chunk], trace: Trace, started: float
    ):
        self.entry = entry
        self.model = entry.name
        self._chunks = chunks
        self._first: list[Chunk] | None = first
        self._trace = trace
        self._started = started
        self._closed = False
        self._done = False
        self.usage = Usage()
        self.finish_reason = "stop"
        self.text_parts: list[str] = []

    async def __aiter__(self) -> AsyncIterator[list[Chunk]]:
        """Yield chunk lists; an upstream failure mid-stream raises `UpstreamError` after recording it."""
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield self._seen(first)
            async for chunks in self._chunks:
                yield self._seen(chunks)
            self._done = True
        except UpstreamError as exc:
            await self.close(exc)
            raise
        await self.close()

    def _seen(self, chunks: list[Chunk]) -> list[Chunk]:
        for chunk in chunks:
            if chunk.delta:
                self.text_parts.append(chunk.delta)
            if chunk.usage is not None:
                self.usage = chunk.usage
            if chunk.finish_reason:
                self.finish_reason = chunk.finish_reason
        return chunks

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    async def close(self, error: UpstreamError | None = None) -> None:
        """Idempotent. Ends the upstream call (if still running) and frees the gate slot."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._chunks.aclose()
        finally:
            self.entry.gate.release()
            name = self.entry.name
            if error is not None:
                self.entry.breaker.failure()
                _record(name, "timeout" if error.timeout else "error", self._trace, self._started, str(error))
            elif self._done:
                self.entry.breaker.success()
                metrics.record_tokens(name, self.usage.input_tokens, self.usage.output_tokens)
                _record(name, "success", self._trace, self._started)
            else:  # our client went away mid-stream: not the model's fault
                self.entry.breaker.release()
                metrics.record_tokens(name, self.usage.input_tokens, self.usage.output_tokens)
                logs.event(
                    logs.MODEL,
                    logging.INFO,
                    "client went away, upstream call stopped",
                    request_id=self._trace.request_id,
                    user=self._trace.user,
                    model=name,
                    outcome="cancelled",
                    latency_ms=(time.monotonic() - self._started) * 1000,
                )


def _record(model: str, outcome: str, trace: Trace, started: float, msg: str = "") -> None:
    latency = (time.monotonic() - started) if started else 0.0
    metrics.child(metrics.MODEL_CALLS, model, outcome).inc()
    if started:
        metrics.child(metrics.MODEL_DURATION, model).observe(latency)
    level = logging.INFO if outcome == "success" else logging.WARNING
    logs.event(
        logs.MODEL,
        level,
        msg,
        request_id=trace.request_id,
        user=trace.user,
        model=model,
        outcome=outcome,
        latency_ms=latency * 1000,
    )
