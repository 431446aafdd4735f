"""Streamed answers: each provider's lines become chunks, and what one read brings moves as one list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from assistantctl.engine.models.adapters import anthropic, ollama, openai
from assistantctl.engine.models.adapters.base import Chunk, UpstreamError, Usage
from assistantctl.engine.models.upstream import ClientPool, stream_chunks


def sse(data: object, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return head + "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n"


def feed_all(parser: object, text: str) -> list[Chunk]:
    chunks: list[Chunk] = []
    for line in text.splitlines():
        if line and not parser.done:  # type: ignore[attr-defined]
            chunks += parser.feed(line)  # type: ignore[attr-defined]
    return chunks


def test_openai_events_until_done_with_the_upstreams_usage_or_a_word_count() -> None:
    parser = openai.StreamParser([{"role": "user", "content": "three words here"}])
    text = sse({"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]})
    text += ": a comment line\n" + sse({"choices": [{"delta": {"content": " there"}, "finish_reason": "length"}]})
    assert [c.delta for c in feed_all(parser, text)] == ["Hi", " there"]
    assert not parser.done
    assert parser.end() == Chunk(usage=Usage(3, 2), finish_reason="length")  # no usage event: words
    feed_all(parser, sse({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}) + sse("[DONE]"))
    assert parser.done and parser.end().usage == Usage(9, 4)


def test_anthropic_events_count_tokens_and_an_error_event_fails_the_stream() -> None:
    parser = anthropic.StreamParser()
    text = sse({"type": "message_start", "message": {"usage": {"input_tokens": 11}}}, "message_start")
    text += sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hello"}})
    text += sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}})
    text += sse({"type": "message_stop"}, "message_stop")
    assert [c.delta for c in feed_all(parser, text)] == ["Hello"]
    # Anthropic's stop reasons are reported as OpenAI's finish reasons (end_turn is stop)
    assert parser.done and parser.end() == Chunk(usage=Usage(11, 5), finish_reason="stop")

    with pytest.raises(UpstreamError, match="overloaded") as failed:
        anthropic.StreamParser().feed("data: " + json.dumps({"type": "error", "error": {"message": "overloaded"}}))
    assert not failed.value.retryable


def test_ollama_lines_end_with_done_and_a_cut_short_stream_is_retryable() -> None:
    parser = ollama.StreamParser()
    assert parser.feed(json.dumps({"message": {"content": "Hi"}, "done": False})) == [Chunk(delta="Hi")]
    last = {"message": {"content": "!"}, "done": True, "prompt_eval_count": 4, "eval_count": 2}
    assert parser.feed(json.dumps(last)) == [Chunk(delta="!")] and parser.done
    assert parser.end() == Chunk(usage=Usage(4, 2), finish_reason="stop")

    cut = ollama.StreamParser()
    cut.feed(json.dumps({"message": {"content": "Hi"}, "done": False}))
    with pytest.raises(UpstreamError, match="without done") as failed:
        cut.end()
    assert failed.value.retryable


async def serve(body: bytes, port: int) -> web.AppRunner:
    """An upstream that writes the whole answer at once, like a fast model or a proxy that buffers."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def collect(batches: AsyncIterator[list[Chunk]], into: list[list[Chunk]]) -> None:
    async for batch in batches:
        into.append(batch)


async def test_what_one_read_brings_moves_as_one_list_and_an_error_comes_after_the_text_before_it(
    unused_tcp_port: int,
) -> None:
    deltas = [sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": w}}) for w in "abc"]
    whole = "".join(deltas) + sse({"type": "message_stop"})
    runner = await serve(whole.encode(), unused_tcp_port)
    pool = ClientPool()
    try:
        client = pool.get(f"http://127.0.0.1:{unused_tcp_port}", 5, 5)
        batches: list[list[Chunk]] = []
        await collect(stream_chunks(client, "/v1/messages", {}, {}, anthropic.StreamParser()), batches)
        assert [[c.delta for c in batch] for batch in batches] == [["a", "b", "c", ""]]
        assert batches[0][-1].finish_reason == "stop"
    finally:
        await pool.aclose()
        await runner.cleanup()

    failing = "".join(deltas[:2]) + sse({"type": "error", "error": {"message": "overloaded"}}) + deltas[2]
    runner = await serve(failing.encode(), unused_tcp_port)
    pool = ClientPool()
    try:
        client = pool.get(f"http://127.0.0.1:{unused_tcp_port}", 5, 5)
        batches = []
        with pytest.raises(UpstreamError, match="overloaded"):
            await collect(stream_chunks(client, "/v1/messages", {}, {}, anthropic.StreamParser()), batches)
        assert [[c.delta for c in batch] for batch in batches] == [["a", "b"]]
    finally:
        await pool.aclose()
        await runner.cleanup()
