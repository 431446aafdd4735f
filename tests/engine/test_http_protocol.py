"""The engine's uvicorn protocol sends what one loop turn writes as one write, in order."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistantctl.engine.http_protocol import CoalescingTransport
from engine_process import RunningEngine, model, start_engine, stop_engine


class RecordingTransport:
    """What a socket transport was asked to do, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 8000) if name == "sockname" else default


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_one_turn_of_writes_leaves_as_one_write_in_order() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"")
    transport.writelines([b"o", b"k"])
    assert raw.writes == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await next_turn()
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    transport.write(b"next")
    await next_turn()
    assert raw.writes[1:] == [b"next"]
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)  # the rest is the real transport's


async def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    assert raw.writes == [b"last words"] and raw.closing
    await next_turn()  # the scheduled flush finds nothing left to send
    assert raw.writes == [b"last words"]

    raw = RecordingTransport()
    transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
    transport.write(b"never sent")
    transport.abort()
    await next_turn()
    assert raw.writes == [] and raw.aborted


async def test_nothing_is_written_to_a_connection_that_closed_meanwhile() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"too late")
    raw.closing = True  # the peer went away before the end of the turn
    await next_turn()
    assert raw.writes == []


@pytest.fixture(scope="module")
def engine(module_dir: Path) -> Iterator[RunningEngine]:
    running = start_engine(module_dir / "protocol", [model("local")])
    yield running
    stop_engine(running)


def test_pipelined_requests_get_whole_answers_in_order(engine: RunningEngine) -> None:
    """Two requests sent in one packet on a keep-alive connection: two complete answers, in order."""
    host, port = engine.url.removeprefix("http://").split(":")
    request = f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: first\r\n\r\n"
    request += f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: second\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request.encode())
        received = b""
        while received.count(b"HTTP/1.1 200") < 2 or not _complete(received):
            data = conn.recv(65536)
            assert data, f"connection closed after {received!r}"
            received += data
    first, second = received.index(b"x-request-id: first"), received.index(b"x-request-id: second")
    assert first < second


def _complete(received: bytes) -> bool:
    """Both answers' bodies are in: each head's content-length worth of bytes follows it."""
    rest = received
    for _ in range(2):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"content-length")))
        if len(rest) < length:
            return False
        rest = rest[length:]
    return True
