"""Hostile input against the real engine on loopback: text that has no UTF-8 form (a lone UTF-16
surrogate), JSON nested 100,000 deep, requests whose headers or body never finish, and upstream
failures whose words (the model's internal address) must stay in the log. Each is refused at the
edge with a 4xx (or 408), on every door (REST, OpenAI API, SSE, WebSocket, webhooks), and none of
them can make another user's request fail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from test_webhooks import SECRETS as WEBHOOK_SECRETS
from test_webhooks import TG, WA, WC, channels, seal, tg_update, wa_signature, wc_message, wc_sign
from websockets.sync.client import connect

from assistantctl.engine.history.group_commit import GroupCommit
from assistantctl.engine.settings import ChannelSettings, SecuritySettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_platforms import FakePlatforms

JWT_KEY = "hostile-input-signing-key-32-bytes!"
SECRETS = {**WEBHOOK_SECRETS, "security.jwt.secret": JWT_KEY}
DEPTH = 100_000
HEADER_TIMEOUT, BODY_TIMEOUT = 1.0, 1.0
CHAT, STREAM, COMPLETIONS = "/api/v1/chat", "/api/v1/chat/stream", "/v1/chat/completions"


def token(sub: str) -> dict[str, str]:
    value = jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, JWT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {value}", "Content-Type": "application/json"}


def deep(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def chat_body(message: bytes, extra: bytes = b"") -> bytes:
    return b'{"message": ' + message + extra + b"}"


def completion_body(content: bytes, stream: bool = False) -> bytes:
    head = b'{"stream": true, ' if stream else b"{"
    return head + b'"messages": [{"role": "user", "content": ' + content + b"}]}"


# A lone surrogate as a JSON escape, in a value and in a key; a 20-digit number sends the body down
# the standard library's path, which accepts both where the fast path (orjson) refuses them.
SURROGATE_BODIES = {
    "message": chat_body(b'"hi \\ud800 there"'),
    "low half": chat_body(b'"\\udfff"'),
    "key": b'{"message": "hi", "\\ud83d": 1}',
    "with a long number": chat_body(b'"\\ud800"', b', "n": 123456789012345678901234'),
}
DEEP_BODIES = {
    "in a field": chat_body(deep()),
    "the whole body": deep(),
    "with a long number": chat_body(b"1", b', "x": ' + b"[" * DEPTH + b"12345678901234567890" + b"]" * DEPTH),
    "objects": chat_body(b'"hi"', b', "x": ' + b'{"a":' * DEPTH + b"1" + b"}" * DEPTH),
}


@pytest.fixture(scope="module")
def engine(module_dir: Path, platforms: FakePlatforms) -> Iterator[RunningEngine]:
    running = start_engine(
        module_dir / "hostile",
        [model("local")],
        secrets=SECRETS,
        security=SecuritySettings(jwt_secret="security.jwt.secret"),
        channels=[*channels(platforms.url, allowed=[]), ChannelSettings(name="websocket", path="/ws")],
        header_timeout_seconds=HEADER_TIMEOUT,
        body_timeout_seconds=BODY_TIMEOUT,
    )
    yield running
    stop_engine(running)


def rows(engine: RunningEngine, where: str = "1 = 1", args: tuple[Any, ...] = ()) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "history.sqlite3")) as db:
        return db.execute(f"SELECT user, content FROM messages WHERE {where}", args).fetchall()


# --- text that has no UTF-8 form --------------------------------------------------------------------


@pytest.mark.parametrize("body", SURROGATE_BODIES.values(), ids=SURROGATE_BODIES.keys())
@pytest.mark.parametrize("path", [CHAT, STREAM])
def test_a_lone_surrogate_gets_400_before_anything_starts(engine: RunningEngine, path: str, body: bytes) -> None:
    response = httpx.post(engine.url + path, content=body, headers=token("sue"), timeout=10)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"  # no event stream was started
    assert response.json()["error"]["code"] == "invalid_text"
    assert "surrogate" in response.json()["error"]["message"]
    assert rows(engine, "user = ?", ("sue",)) == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_openai_api_refuses_a_lone_surrogate_with_400(engine: RunningEngine, stream: bool) -> None:
    body = completion_body(b'"\\ud800"', stream)
    response = httpx.post(engine.url + COMPLETIONS, content=body, headers=token("sue"), timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_text"


# --- JSON nested 100,000 deep -----------------------------------------------------------------------------


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize("path", [CHAT, STREAM, COMPLETIONS])
def test_deeply_nested_json_gets_400_not_a_crash(engine: RunningEngine, path: str, body: bytes) -> None:
    response = httpx.post(engine.url + path, content=body, headers=token("dee"), timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "too_deep"


def test_nesting_up_to_the_limit_is_still_read(engine: RunningEngine) -> None:
    body = chat_body(b'"hi"', b', "x": ' + deep(63))  # 64 levels with the body itself
    response = httpx.post(engine.url + CHAT, content=body, headers=token("dee"), timeout=10)
    assert response.status_code == 200, response.text


# --- the webhooks and the websocket -----------------------------------------------------------------


def webhook_post(engine: RunningEngine, channel: str, body: bytes) -> httpx.Response:
    """A correctly authenticated webhook call: the platform's secret header or body signature."""
    if channel == "telegram":
        path, auth = TG, {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRETS["channels.telegram.webhook_secret"]}
    else:
        path, auth = WA, {"X-Hub-Signature-256": wa_signature(body)}
    return httpx.post(engine.url + path, content=body, headers={"Content-Type": "application/json", **auth}, timeout=10)


def _tg_text(text_json: bytes) -> bytes:
    update = json.dumps(tg_update(9001, 4242, "PLACEHOLDER")).encode()
    return update.replace(b'"PLACEHOLDER"', text_json)


def _wa_text(text_json: bytes) -> bytes:
    message = {"from": "4915550001", "id": "wamid.hostile", "type": "text", "text": {"body": "PLACEHOLDER"}}
    value = {"metadata": {"phone_number_id": "109876543210"}, "messages": [message]}
    payload = json.dumps({"entry": [{"changes": [{"value": value}]}]}).encode()
    return payload.replace(b'"PLACEHOLDER"', text_json)


@pytest.mark.parametrize(
    ("channel", "body", "reason"),
    [
        ("telegram", _tg_text(b'"\\ud800"'), "surrogate"),
        ("telegram", deep(), "deep"),
        ("telegram", _tg_text(deep()), "deep"),
        ("whatsapp", _wa_text(b'"\\udc00"'), "surrogate"),
        ("whatsapp", _wa_text(deep()), "deep"),
    ],
    ids=["telegram-surrogate", "telegram-deep", "telegram-deep-text", "whatsapp-surrogate", "whatsapp-deep"],
)
def test_webhooks_refuse_hostile_json_with_400(
    engine: RunningEngine, platforms: FakePlatforms, channel: str, body: bytes, reason: str
) -> None:
    platforms.reset()
    before = rows(engine)
    response = webhook_post(engine, channel, body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]["message"]
    time.sleep(0.3)  # a reply would be sent from a background task: give one the time to show up
    assert platforms.sent == [] and rows(engine) == before


def test_wecom_refuses_a_character_reference_to_a_surrogate(engine: RunningEngine, platforms: FakePlatforms) -> None:
    encrypted = seal(wc_message("77001", "zhangsan", "&#xD800;").replace("<![CDATA[&#xD800;]]>", "&#xD800;"))
    envelope = f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    response = httpx.post(engine.url + WC, params=wc_sign(encrypted), content=envelope.encode(), timeout=10)
    assert response.status_code == 400


def _ws(engine: RunningEngine, sub: str) -> Any:
    url = engine.url.replace("http://", "ws://") + "/ws"
    return connect(url, additional_headers=token(sub), proxy=None, open_timeout=5)


def _frame(ws: Any) -> dict[str, Any]:
    while True:
        frame = json.loads(ws.recv(timeout=10))
        if frame["type"] != "ping":
            return frame


def test_websocket_frames_with_hostile_json_get_an_error_frame_and_the_connection_lives_on(
    engine: RunningEngine,
) -> None:
    with _ws(engine, "wes") as ws:
        ws.send('{"type": "chat", "id": "m1", "message": "\\ud800"}')
        surrogate = _frame(ws)
        ws.send('{"type": "chat", "id": "m2", "message": ' + deep().decode() + "}")
        nested = _frame(ws)
        time.sleep(HEADER_TIMEOUT + BODY_TIMEOUT + 0.5)  # the request timeouts end with the upgrade
        ws.send(json.dumps({"type": "chat", "id": "m3", "message": "still here?"}))
        frames = [_frame(ws)]
        while frames[-1]["type"] == "chunk":
            frames.append(_frame(ws))
    assert (surrogate["type"], surrogate["code"]) == ("error", "invalid_text")
    assert (nested["type"], nested["code"]) == ("error", "too_deep")
    assert frames[-1]["type"] == "done" and frames[-1]["id"] == "m3"
    assert [content for _, content in rows(engine, "user = ?", ("wes",))][0] == "still here?"


# --- requests that never finish ---------------------------------------------------------------------------


def _address(engine: RunningEngine) -> tuple[str, int]:
    host, port = engine.url.removeprefix("http://").split(":")
    return host, int(port)


def _read_until_closed(conn: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    conn.settimeout(limit)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while data := conn.recv(65536):
            received += data
    return received, time.monotonic() - started


def _open_fds(engine: RunningEngine) -> int:
    """Open files of the engine: its parent (which holds the listening socket) and its workers."""
    parent = engine.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in [parent, *children] if Path(f"/proc/{pid}").exists())


def test_headers_that_never_finish_are_cut_off_after_the_header_timeout(engine: RunningEngine) -> None:
    baseline = _open_fds(engine)
    conns = [socket.create_connection(_address(engine), timeout=5) for _ in range(50)]
    for i, conn in enumerate(conns):
        conn.sendall(b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nX-Slow: " + str(i).encode())  # no end of headers
    idle = socket.create_connection(_address(engine), timeout=5)  # connected, never says anything
    time.sleep(0.3)
    assert _open_fds(engine) >= baseline + 50
    try:
        answers = [_read_until_closed(conn, HEADER_TIMEOUT + 5) for conn in conns]
        silent, waited = _read_until_closed(idle, HEADER_TIMEOUT + 5)
    finally:
        for conn in [*conns, idle]:
            conn.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer, _ in answers), answers[0]
    assert silent == b"" and waited < HEADER_TIMEOUT + 4
    time.sleep(0.3)
    assert _open_fds(engine) <= baseline + 2


def test_a_body_shorter_than_its_content_length_gets_408_after_the_body_timeout(engine: RunningEngine) -> None:
    body = b'{"message": "never finished'
    head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body) + 50}\r\n"
    auth = f"Authorization: {token('shorty')['Authorization']}\r\n\r\n"
    with socket.create_connection(_address(engine), timeout=5) as conn:
        conn.sendall(head.encode() + auth.encode() + body)
        answer, waited = _read_until_closed(conn, BODY_TIMEOUT + 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code":"body_timeout"' in answer
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 4
    assert rows(engine, "user = ?", ("shorty",)) == []


def test_a_keep_alive_connection_may_idle_between_requests_longer_than_the_header_timeout(
    engine: RunningEngine,
) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(_address(engine), timeout=5) as conn:
        conn.sendall(request)
        first = conn.recv(65536)
        time.sleep(HEADER_TIMEOUT + 0.5)
        conn.sendall(request)
        second = conn.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 ")


def test_a_slow_but_steady_request_within_the_timeouts_is_served(engine: RunningEngine) -> None:
    body = json.dumps({"message": "slow and steady"}).encode()
    head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    auth = f"Authorization: {token('turtle')['Authorization']}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(_address(engine), timeout=5) as conn:
        for piece in (head.encode(), auth.encode(), body[:5], body[5:]):
            conn.sendall(piece)
            time.sleep(HEADER_TIMEOUT / 6)
        answer, _ = _read_until_closed(conn, 5)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


# --- one bad request among many good ones ---------------------------------------------------------------


async def _slow_headers(engine: RunningEngine) -> bytes:
    reader, writer = await asyncio.open_connection(*_address(engine))
    writer.write(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\n{'Authorization: ' + token('mallory-slow')['Authorization']}".encode()
    )
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 5)
    finally:
        writer.close()


async def _short_body(engine: RunningEngine) -> bytes:
    body = b'{"message": "mallory short body'
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n"
        f"Authorization: {token('mallory-short')['Authorization']}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(*_address(engine))
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), BODY_TIMEOUT + 5)
    finally:
        writer.close()


async def test_sixty_innocent_requests_succeed_beside_malicious_ones_sent_at_the_same_moment(
    engine: RunningEngine,
) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=engine.url, timeout=30, limits=limits) as client:

        async def innocent(i: int) -> httpx.Response:
            path = STREAM if i % 3 == 0 else CHAT
            return await client.post(path, json={"message": f"innocent question {i}"}, headers=token(f"user{i}"))

        async def hostile(name: str, body: bytes) -> httpx.Response:
            return await client.post(CHAT, content=body, headers=token(name))

        innocents = [innocent(i) for i in range(60)]
        malicious = [
            hostile("mallory-deep", chat_body(b'"mallory deep"', b', "x": ' + deep())),
            hostile("mallory-surrogate", chat_body(b'"mallory \\ud800"')),
            hostile("mallory-surrogate-2", chat_body(b'"mallory \\udc00"', b', "n": 123456789012345678901234')),
        ]
        results = await asyncio.gather(
            *innocents[:30], *malicious, _slow_headers(engine), _short_body(engine), *innocents[30:]
        )
    good = [*results[:30], *results[35:]]
    deep_answer, surrogate, surrogate_2, slow, short = results[30:35]
    failed = [(r.status_code, r.text) for r in good if r.status_code != 200 or '"error"' in r.text]
    assert failed == [], failed
    assert [r.status_code for r in (deep_answer, surrogate, surrogate_2)] == [400, 400, 400]
    assert slow.startswith(b"HTTP/1.1 408 ") and short.startswith(b"HTTP/1.1 408 ")
    assert len(rows(engine, "user LIKE 'user%'")) == 120  # each innocent question and its answer
    assert rows(engine, "user LIKE 'mallory%' OR content LIKE '%mallory%'") == []


async def test_a_row_that_cannot_be_stored_fails_only_its_own_request_in_a_group_commit() -> None:
    """The history's batching itself (engine/history/group_commit.py), with a real SQLite transaction per
    batch: a lone surrogate cannot be encoded, which rolled back 60 other users' rows with it."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE rows (text TEXT NOT NULL)")
    sizes: list[int] = []

    async def commit(batch: list[str]) -> None:
        sizes.append(len(batch))
        try:
            db.executemany("INSERT INTO rows VALUES (?)", [(text,) for text in batch])
            db.commit()
        except Exception:
            db.rollback()
            raise

    group = GroupCommit[str](commit)
    group.start()
    texts = [f"innocent {i}" for i in range(60)]
    texts.insert(30, "bad \ud800")
    try:
        results = await asyncio.gather(*(group.submit(text) for text in texts), return_exceptions=True)
    finally:
        await group.stop()
    assert sizes[0] == 61  # they really were one batch
    failed = [(text, type(result)) for text, result in zip(texts, results, strict=True) if result is not None]
    assert failed == [("bad \ud800", UnicodeEncodeError)]
    stored = sorted(text for (text,) in db.execute("SELECT text FROM rows"))
    assert stored == sorted(text for text in texts if text != "bad \ud800")
