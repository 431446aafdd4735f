"""The mobile side of the websocket channel, against the real engine on loopback: every error frame
carries the id of the frame that caused it, and the reference client (examples/mobile_client)
survives what a phone's connection does to it (drops mid-reply, a restarting engine, time offline,
a link that goes silent) without losing a message or delivering a reply twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from assistantctl.engine.settings import ChannelSettings, RateLimitSettings
from engine_process import RunningEngine, StartEngine, as_user, model, start_engine, stop_engine
from fake_models import WORDS, FakeUpstream, free_port
from processes import stop_process

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from mobile_client import Cache, Chunk, ClientRefused, Disconnected, MobileClient, Reply  # noqa: E402

HEARTBEAT = 0.5
MAX_CHARS = 200
REQUEST_TIMEOUT = 3.0


def ws_channel() -> ChannelSettings:
    return ChannelSettings(name="websocket", path="/ws", heartbeat_seconds=HEARTBEAT)


def models(fake: FakeUpstream) -> list:
    return [model("local"), model("cloud", "openai", model="gpt-test", api_base=f"{fake.url}/v1", api_key_secret="k")]


@pytest.fixture(scope="module")
def engine(module_dir: Path, openai_fake: FakeUpstream) -> Iterator[RunningEngine]:
    running = start_engine(
        module_dir / "mobile",
        models(openai_fake),
        secrets={"k": "sk-test"},
        channels=[ws_channel()],
        max_message_chars=MAX_CHARS,
        request_timeout_seconds=REQUEST_TIMEOUT,
    )
    yield running
    stop_engine(running)


@pytest.fixture
def fake(openai_fake: FakeUpstream) -> Iterator[FakeUpstream]:
    openai_fake.reset()
    yield openai_fake
    openai_fake.reset()


def ws_connect(engine: RunningEngine, user: str) -> ClientConnection:
    url = engine.url.replace("http://", "ws://") + "/ws"
    return connect(url, additional_headers=as_user(user), proxy=None, open_timeout=5)


def next_frame(ws: ClientConnection, timeout: float = 8.0) -> dict[str, Any]:
    """The next frame that is not a ping (pings are answered)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] != "ping":
            return frame
        ws.send(json.dumps({"type": "pong"}))


# --- every error code a frame can cause, the frame that causes it, and the id its error carries.
# An id is usable when it is a string of 1-128 of A-Z a-z 0-9 . _ : - ; a frame that is not JSON
# (or nested too deep to be read) has none. Covered elsewhere: unknown_conversation
# (test_websocket.py, with the chat's id), unavailable (the restart test below).
ID = "e-1"
FRAME_ERRORS: list[tuple[str, Any, str | None]] = [
    ("invalid_json", "{not json", None),
    ("invalid_frame", b"\x00\x01", None),
    ("invalid_frame", '["chat"]', None),
    ("too_deep", '{"type":"chat","id":"e-1","x":' + "[" * 80 + "]" * 80 + "}", None),
    ("invalid_text", '{"type":"chat","id":"e-1","message":"half \\ud83d of a face"}', ID),
    ("unknown_type", {"type": "shout", "id": ID}, ID),
    ("unknown_type", {"id": ID, "message": "no type"}, ID),
    ("invalid_id", {"type": "chat", "id": "has space", "message": "x"}, None),
    ("invalid_id", {"type": "chat", "id": 7, "message": "x"}, None),
    ("missing_field", {"type": "chat", "id": ID}, ID),
    ("invalid_field", {"type": "chat", "id": ID, "message": "   "}, ID),
    ("invalid_field", {"type": "chat", "id": ID, "message": "hi", "priority": 12}, ID),
    ("invalid_field", {"type": "chat", "id": ID, "message": "hi", "conversation_id": "../etc"}, ID),
    ("message_too_long", {"type": "chat", "id": ID, "message": "x" * (MAX_CHARS + 1)}, ID),
    ("unknown_model", {"type": "chat", "id": ID, "message": "hi", "model": "nope"}, ID),
    ("invalid_field", {"type": "resume", "id": ID, "last_id": 5}, ID),
    ("unknown_id", {"type": "resume", "id": ID, "last_id": "never-sent"}, ID),
    ("unknown_id", {"type": "resume", "last_id": "never-sent"}, "never-sent"),  # the id it does not know
    ("invalid_field", {"type": "approval", "id": ID, "approve": True}, ID),
    ("unknown_approval", {"type": "approval", "id": ID, "approval_id": "nope", "approve": True}, ID),
    ("unknown_id", {"type": "cancel", "id": ID}, ID),
    ("unknown_id", {"type": "cancel", "id": 5}, None),
    ("unknown_id", {"type": "cancel", "id": "has space"}, None),
]


@pytest.mark.parametrize(("code", "frame", "answered_id"), FRAME_ERRORS, ids=lambda v: str(v)[:30])
def test_each_error_frame_carries_the_id_of_the_frame_that_caused_it(
    engine: RunningEngine, code: str, frame: Any, answered_id: str | None
) -> None:
    with ws_connect(engine, "errors") as ws:
        ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))
        error = next_frame(ws)
        ws.send(json.dumps({"type": "ping"}))
        alive = next_frame(ws)
    assert (error["type"], error["code"], error["id"]) == ("error", code, answered_id), error
    assert error["message"]
    assert alive["type"] == "pong"  # an error frame never closes the connection


def test_a_failed_or_timed_out_reply_carries_its_id(engine: RunningEngine, fake: FakeUpstream) -> None:
    fake.behaviour.fail_next, fake.behaviour.fail_status = 100, 400  # a 400 is not retried
    with ws_connect(engine, "errors") as ws:
        ws.send(json.dumps({"type": "chat", "id": "up-1", "message": "hi", "model": "cloud"}))
        failed = next_frame(ws)
        fake.reset()
        fake.behaviour.hang = True
        ws.send(json.dumps({"type": "chat", "id": "slow-1", "message": "hi", "model": "cloud"}))
        timed_out = next_frame(ws, REQUEST_TIMEOUT + 5)
    assert (failed["type"], failed["code"], failed["id"]) == ("error", "upstream_error", "up-1"), failed
    assert (timed_out["type"], timed_out["code"], timed_out["id"]) == ("error", "timeout", "slow-1"), timed_out


def test_a_rate_limited_chat_carries_its_id(engine_factory: StartEngine) -> None:
    limited = engine_factory(
        [model("local")],
        name="limited",
        channels=[ws_channel()],
        rate_limit=RateLimitSettings(requests_per_minute=1, burst=1, key="user"),
    )
    with ws_connect(limited, "busy") as ws:
        ws.send(json.dumps({"type": "chat", "id": "first", "message": "hi"}))
        while (frame := next_frame(ws))["type"] != "done":
            assert frame["id"] == "first"
        ws.send(json.dumps({"type": "chat", "id": "second", "message": "again"}))
        refused = next_frame(ws)
    assert (refused["code"], refused["id"]) == ("rate_limited", "second") and refused["retry_after"] >= 1


# --- the reference client (examples/mobile_client) against the real engine


class Proxy:
    """A TCP relay between the client and the engine, as a phone's network: `cut` closes every
    connection at once (the network is gone); `freeze` keeps the current ones open but passes
    nothing on them any more (a link that died without a close; new connections still pass)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._links: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cut(self) -> None:
        for link in self._links:
            for writer in link["writers"]:
                writer.transport.abort()
        self._links.clear()

    def freeze(self) -> None:
        for link in self._links:
            link["frozen"] = True

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = {"writers": [writer, up_writer], "frozen": False}
        self._links.append(link)
        await asyncio.gather(self._pipe(reader, up_writer, link), self._pipe(up_reader, writer, link))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                if link["frozen"]:
                    continue  # swallowed: the other side never hears of it
                writer.write(data)
                await writer.drain()
            writer.close()


def engine_port(engine: RunningEngine) -> int:
    return int(engine.url.rsplit(":", 1)[1])


def mobile(url: str, cache: Path, user: str = "phone") -> MobileClient:
    return MobileClient(url, cache, headers=as_user(user), heartbeat_seconds=HEARTBEAT, max_backoff_seconds=1.0)


class Recorder:
    """Every event a client emits, collected in the background."""

    def __init__(self, client: MobileClient) -> None:
        self.events: list[Any] = []
        self._task = asyncio.create_task(self._collect(client))

    async def _collect(self, client: MobileClient) -> None:
        async for event in client.events():
            self.events.append(event)

    def of(self, kind: type, client_id: str | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (client_id is None or e.id == client_id)]

    async def until(self, check: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out; events: {self.events}"
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._task.cancel()


def slow(fake: FakeUpstream, chunks: int = 10, delay: float = 0.12) -> str:
    fake.behaviour.chunk_delay, fake.behaviour.stream_chunks = delay, chunks
    return "".join(WORDS[i % len(WORDS)] for i in range(chunks))


async def test_send_returns_the_reply_with_its_chunks_delivered_once_in_order(
    engine: RunningEngine, tmp_path: Path
) -> None:
    async with mobile(engine.url.replace("http://", "ws://") + "/ws", tmp_path / "c.sqlite3") as client:
        seen = Recorder(client)
        reply = await asyncio.wait_for(client.send("hello from a phone"), 10)
        await seen.until(lambda: seen.of(Reply))
        seen.stop()
    chunks = seen.of(Chunk, reply.id)
    assert "hello from a phone" in reply.text and reply.replayed is False
    assert [c.seq for c in chunks] == list(range(len(chunks))) and "".join(c.delta for c in chunks) == reply.text
    assert seen.of(Reply) == [reply]


async def test_a_drop_mid_reply_is_survived_with_one_model_call_and_one_delivery(
    engine: RunningEngine, fake: FakeUpstream, tmp_path: Path
) -> None:
    full = slow(fake)
    async with Proxy(engine_port(engine)) as proxy, mobile(proxy.url, tmp_path / "c.sqlite3") as client:
        seen = Recorder(client)
        asking = asyncio.create_task(client.send("tell me slowly", model="cloud"))
        await seen.until(lambda: len(seen.of(Chunk)) >= 2)
        proxy.cut()  # the phone loses its network in the middle of the reply
        reply = await asyncio.wait_for(asking, 15)
        seen.stop()
    assert reply.text == full
    chunks = seen.of(Chunk, reply.id)  # the re-send's chunks start at seq 0 again: none repeated
    assert [c.seq for c in chunks] == list(range(len(chunks))) and "".join(c.delta for c in chunks) == full
    assert client.connections == 2 and len(seen.of(Disconnected)) == 1
    assert len(fake.calls) == 1 and seen.of(Reply) == [reply]


async def test_an_engine_restart_mid_reply_still_gets_the_message_answered_once(
    engine_factory: StartEngine, openai_fake: FakeUpstream, tmp_path: Path
) -> None:
    openai_fake.reset()
    full = slow(openai_fake, chunks=8, delay=0.1)
    own = engine_factory(models(openai_fake), name="restarting", secrets={"k": "sk-test"}, channels=[ws_channel()])
    async with mobile(own.url.replace("http://", "ws://") + "/ws", tmp_path / "c.sqlite3") as client:
        seen = Recorder(client)
        asking = asyncio.create_task(client.send("survive a restart", model="cloud"))
        await seen.until(lambda: len(seen.of(Chunk)) >= 2)
        await asyncio.to_thread(restart, own)
        reply = await asyncio.wait_for(asking, 20)
        await asyncio.sleep(0.5)  # anything more for this id would come now
        seen.stop()
    openai_fake.reset()
    assert reply.text == full and seen.of(Reply) == [reply]
    assert client.connections >= 2 and Disconnected("closed (1012)") in seen.of(Disconnected)  # uvicorn's going-away


def restart(engine: RunningEngine) -> None:
    """Stop the engine and start it again on the same settings (same port, same data)."""
    stop_process(engine.process, grace=15)
    with open(engine.root / "stderr.log", "ab") as stderr:
        engine.process = subprocess.Popen(
            [sys.executable, "-m", "assistantctl.engine", "--settings", str(engine.settings_path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 60  # a start takes ~1 s alone, 15 s and more on a loaded machine
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{engine.url}/health", timeout=0.5).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("the engine did not come back in 60 s")


async def test_a_message_queued_offline_survives_the_client_object_and_is_answered_once(
    engine: RunningEngine, tmp_path: Path
) -> None:
    cache = tmp_path / "outbox.sqlite3"
    offline = mobile(f"ws://127.0.0.1:{free_port()}/ws", cache)  # nothing listens there
    await offline.start()
    queued = await offline.submit("written in a tunnel")
    await asyncio.sleep(0.5)
    assert offline.connections == 0
    await offline.close()  # the app is killed; the message stays on disk
    assert [m.id for m in await pending(cache)] == [queued]
    # Two client objects on that file at once (the app and its background service): both re-send
    # the id and both get a `done` for it; the app hears of the reply once in all.
    url = engine.url.replace("http://", "ws://") + "/ws"
    async with mobile(url, cache) as first, mobile(url, cache) as second:
        seen = [Recorder(first), Recorder(second)]
        await seen[0].until(lambda: sum(len(r.of(Reply)) for r in seen) >= 1)
        await asyncio.sleep(1.0)
        for recorder in seen:
            recorder.stop()
    replies = [e for r in seen for e in r.of(Reply)]
    assert [r.id for r in replies] == [queued] and "written in a tunnel" in replies[0].text
    assert await pending(cache) == []


async def pending(cache: Path) -> list[Any]:
    store = Cache(cache)
    try:
        return await store.pending()
    finally:
        await store.close()


async def test_the_client_answers_heartbeats_so_an_idle_connection_stays_open(
    engine: RunningEngine, tmp_path: Path
) -> None:
    async with mobile(engine.url.replace("http://", "ws://") + "/ws", tmp_path / "c.sqlite3") as client:
        seen = Recorder(client)
        await seen.until(lambda: client.connected)
        await asyncio.sleep(10 * HEARTBEAT)  # the engine closes after 3 unanswered heartbeats
        reply = await asyncio.wait_for(client.send("still here?"), 10)
        seen.stop()
    assert client.pongs_sent >= 5 and client.connections == 1 and seen.of(Disconnected) == []
    assert "still here?" in reply.text


async def test_a_silent_link_is_taken_for_dead_after_three_heartbeats_and_replaced(
    engine: RunningEngine, tmp_path: Path
) -> None:
    async with Proxy(engine_port(engine)) as proxy, mobile(proxy.url, tmp_path / "c.sqlite3") as client:
        seen = Recorder(client)
        await seen.until(lambda: client.connected)
        proxy.freeze()  # no close, no error: the pings just stop coming
        frozen = time.monotonic()
        await seen.until(lambda: seen.of(Disconnected), timeout=5)
        noticed = time.monotonic() - frozen
        await seen.until(lambda: client.connections == 2, timeout=5)
        reply = await asyncio.wait_for(client.send("over the new link"), 10)
        seen.stop()
    assert seen.of(Disconnected) == [Disconnected("no heartbeat")]
    assert noticed >= 2 * HEARTBEAT  # it waited for the heartbeats it missed (the last ping came <= 1 before)
    assert "over the new link" in reply.text


async def test_a_refused_handshake_fails_the_send_instead_of_retrying_forever(
    engine: RunningEngine, tmp_path: Path
) -> None:
    url = engine.url.replace("http://", "ws://") + "/ws"
    client = MobileClient(url, tmp_path / "c.sqlite3", headers={"Authorization": "Bearer forged.token.here"})
    async with client:
        with pytest.raises(ClientRefused, match="401"):
            await asyncio.wait_for(client.send("let me in"), 10)


async def test_a_reply_finished_while_the_app_was_away_comes_by_resume_without_a_resend(
    engine: RunningEngine, fake: FakeUpstream, tmp_path: Path
) -> None:
    cache, url = tmp_path / "c.sqlite3", engine.url.replace("http://", "ws://") + "/ws"
    async with mobile(url, cache, "resumer") as client:
        first = await asyncio.wait_for(client.send("first"), 10)
        full = slow(fake, chunks=6, delay=0.1)
        seen = Recorder(client)
        second = await client.submit("second, slowly", model="cloud")
        await seen.until(lambda: seen.of(Chunk, second))
        seen.stop()
    # The app is gone mid-reply; the engine finishes and stores the reply meanwhile.
    await asyncio.sleep(1.5)
    async with mobile(url, cache, "resumer") as client:
        seen = Recorder(client)
        await seen.until(lambda: seen.of(Reply))
        await asyncio.sleep(0.5)
        seen.stop()
    [reply] = seen.of(Reply)
    assert (reply.id, reply.text, reply.replayed) == (second, full, True) and reply.id != first.id
    assert client.chats_sent == 0  # `resume` after `first` brought it: nothing was sent again
    assert len(fake.calls) == 1
