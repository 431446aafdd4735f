"""The benchmarks' instant upstream speaks enough OpenAI for the official SDK, plain and streamed."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from processes import stop_process

FAKE_UPSTREAM = Path(__file__).resolve().parents[1] / "bench" / "fake_upstream.py"


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(FAKE_UPSTREAM), str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            break
        except httpx.HTTPError:
            assert process.poll() is None and time.monotonic() < deadline, "the fake upstream did not start"
            time.sleep(0.05)
    yield url
    stop_process(process)


def test_the_openai_sdk_gets_a_completion_and_a_stream(upstream: str) -> None:
    client = openai.OpenAI(base_url=f"{upstream}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "three words here"}]
    reply = client.chat.completions.create(model="bench", messages=messages)
    assert reply.model == "bench" and reply.choices[0].message.content == "This is the fake upstream."
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 6)

    stream = client.chat.completions.create(
        model="bench", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "This is the fake upstream."
    assert chunks[-1].usage.total_tokens == 9
    assert [m.id for m in client.models.list()] == ["fake"]


def test_keep_alive_requests_and_bad_input(upstream: str) -> None:
    with httpx.Client(base_url=upstream) as client:
        for _ in range(3):  # one connection, several answers
            assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 200
        assert client.get("/v2/anything").status_code == 404
    host, port = upstream.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert conn.recv(1024).startswith(b"HTTP/1.1 400")
