"""An instant OpenAI-compatible upstream for benchmarks: `python bench/fake_upstream.py 9100`.

POST /v1/chat/completions answers at once: JSON, or with "stream": true an event stream of a
few chunks, a usage event and [DONE], in one write. GET /v1/models lists one model.

It is an asyncio protocol on uvloop with httptools' parser rather than a web framework, because
it shares the bench machine's two cores with what it measures: an aiohttp server spent ~85 µs of
CPU per answer (~210 µs per stream), this one a fraction of that, so more of the machine goes to
the engine and the bare forwarder, which both talk to it.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import orjson
import uvloop

WORDS = ["This", " is", " the", " fake", " upstream", "."]


def _usage(body: dict) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {"prompt_tokens": prompt, "completion_tokens": len(WORDS), "total_tokens": prompt + len(WORDS)}


def _completion(body: dict) -> bytes:
    message = {"role": "assistant", "content": "".join(WORDS)}
    return orjson.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": _usage(body),
        }
    )


def _event(model: str, choices: list[dict], **extra: object) -> bytes:
    chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
    return b"data: " + orjson.dumps({**chunk, "choices": choices, **extra}) + b"\n\n"


def _stream(body: dict) -> bytes:
    model = body.get("model", "fake")
    events = [_event(model, [{"index": 0, "delta": {"content": w}, "finish_reason": None}]) for w in WORDS]
    events.append(_event(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    events.append(_event(model, [], usage=_usage(body)))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


MODELS = orjson.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]})
NOT_FOUND = b'{"error": {"message": "not found"}}'


def _response(status: str, kind: bytes, payload: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(payload)}\r\n".encode()
    return head + b"Content-Type: " + kind + b"\r\n\r\n" + payload


class Connection(asyncio.Protocol):
    """One client connection; requests on it are answered in order (keep-alive)."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_response("400 Bad Request", b"text/plain", b"bad request"))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        self.transport.write(self._answer(self.parser.get_method(), url.split(b"?", 1)[0], body))

    @staticmethod
    def _answer(method: bytes, path: bytes, body: bytes) -> bytes:
        if method == b"GET" and path == b"/v1/models":
            return _response("200 OK", b"application/json", MODELS)
        if method == b"POST" and path == b"/v1/chat/completions":
            request = orjson.loads(body or b"{}")
            if request.get("stream"):
                return _response("200 OK", b"text/event-stream", _stream(request))
            return _response("200 OK", b"application/json", _completion(request))
        return _response("404 Not Found", b"application/json", NOT_FOUND)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Connection, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 9100))
