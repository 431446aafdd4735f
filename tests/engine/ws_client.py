"""What the websocket channel's tests share: the channel as the tests configure it, a model list
with a slow streaming cloud model, a client that answers the server's pings, and signed JWTs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from websockets.sync.client import ClientConnection, connect

from assistantctl.engine.settings import ChannelSettings
from engine_process import RunningEngine, as_user, model, start_engine
from fake_models import WORDS, FakeUpstream

HEARTBEAT = 0.2
JWT_KEY = "websocket-test-signing-key-32-bytes"


def ws_channel() -> ChannelSettings:
    return ChannelSettings(name="websocket", path="/ws", heartbeat_seconds=HEARTBEAT)


def slow_models(fake: FakeUpstream) -> list:
    return [model("local"), model("cloud", "openai", model="gpt-test", api_base=f"{fake.url}/v1", api_key_secret="k")]


def start_ws_engine(root: Path, fake: FakeUpstream) -> RunningEngine:
    """An engine with the websocket channel and slow_models(fake) (the cloud model's key is "k")."""
    return start_engine(root, slow_models(fake), secrets={"k": "sk-test"}, channels=[ws_channel()])


class Client:
    """A websocket client that answers the server's pings (and counts them) while it reads.

    `user` signs in as that user with a token of the test engines' JWT key (engine_process.as_user);
    `headers` are sent as they are, and `query` is appended to the path (`?user=...`)."""

    def __init__(
        self, engine: RunningEngine, user: str | None = None, headers: dict[str, str] | None = None, query: str = ""
    ):
        url = engine.url.replace("http://", "ws://") + "/ws" + query
        sent = {**(as_user(user) if user else {}), **(headers or {})}
        self.ws: ClientConnection = connect(url, additional_headers=sent, proxy=None, open_timeout=5).__enter__()
        self.pings: list[dict[str, Any]] = []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.close()

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if frame["type"] != "ping":
                return frame
            self.pings.append(frame)
            self.send({"type": "pong"})

    def reply(self, client_id: str, timeout: float = 10.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Frames for `client_id` up to its `done` (or `error`): (chunks, final frame)."""
        chunks = []
        while True:
            frame = self.recv(timeout)
            assert frame.get("id") == client_id, frame
            if frame["type"] == "chunk":
                chunks.append(frame)
            else:
                return chunks, frame

    def quiet_for(self, seconds: float) -> list[dict[str, Any]]:
        """Every non-ping frame that arrives within `seconds` (answering pings meanwhile)."""
        frames, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frames.append(self.recv(left))
            except TimeoutError:
                break
        return frames


def slow_stream(fake: FakeUpstream, chunks: int = 10, delay: float = 0.12) -> str:
    """Makes `fake` stream `chunks` chunks `delay` seconds apart; the whole reply it will stream."""
    fake.behaviour.chunk_delay, fake.behaviour.stream_chunks = delay, chunks
    return "".join(WORDS[i % len(WORDS)] for i in range(chunks))


def jwt_headers(sub: str) -> dict[str, str]:
    """An Authorization header with a JWT for `sub` signed with JWT_KEY (the secured engines' key)."""
    value = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, JWT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {value}"}
