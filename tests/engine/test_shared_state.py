"""Two engine nodes sharing state: history in a real PostgreSQL, rate-limit buckets in a real Redis.

Each node is its own engine process with its own port and data dir; the only thing they share is
the database and the Redis, which this file starts itself on loopback (and stops by pid).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api_keys import wait_for_key
from assistantctl.engine.settings import ChannelSettings, RateLimitSettings, SecuritySettings
from engine_process import TEST_JWT_KEY, TEST_JWT_SECRET, RunningEngine, as_user, model, start_engine, stop_engine
from fake_models import WORDS, FakeUpstream, free_port
from postgres_server import Service
from postgres_server import fetch as _fetch
from postgres_server import wait_for_port as _wait_for_port
from processes import stop_process
from ws_client import Client

pytestmark = pytest.mark.slow

HISTORY_KEY = "shared-state-test-history-key"
BURST = 4  # per user; refills at 6/min, so nothing measurable comes back during a test


def _start_redis(root: Path, port: int | None = None) -> Service:
    found = shutil.which("redis-server")
    if not found:
        pytest.fail("redis-server is missing: apt-get install redis-server (these tests need the real server)")
    root.mkdir(parents=True, exist_ok=True)
    port, log = port or free_port(), root / "redis.log"
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
    with open(log, "ab") as out:
        process = subprocess.Popen([found, *args, "--dir", str(root)], stdout=out, stderr=out)
    try:
        _wait_for_port(port, process, "redis-server", log)
    except RuntimeError:
        stop_process(process)
        raise
    return Service(process, f"redis://127.0.0.1:{port}/0", root, port)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = _start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield service
    finally:
        stop_process(service.process)


def _node(root: Path, name: str, pg: Service, rds: Service, fake: FakeUpstream) -> RunningEngine:
    return start_engine(
        root / name,
        [model("local"), model("cloud", "openai", model="gpt-test", api_base=f"{fake.url}/v1", api_key_secret="k")],
        secrets={"k": "sk-test", "pg": pg.url, "redis": rds.url, "history": HISTORY_KEY, TEST_JWT_SECRET: TEST_JWT_KEY},
        channels=[ChannelSettings(name="websocket", path="/ws", heartbeat_seconds=5)],
        history_backend="postgres",
        history_dsn_secret="pg",
        rate_limit_backend="redis",
        rate_limit_redis_url_secret="redis",
        rate_limit=RateLimitSettings(requests_per_minute=6, burst=BURST, key="user"),
        security=SecuritySettings(jwt_secret=TEST_JWT_SECRET, history_key_secret="history", pii_masking=["email"]),
    )


@pytest.fixture(scope="module")
def nodes(
    module_dir: Path, postgres: Service, shared_redis: Service, openai_fake: FakeUpstream
) -> Iterator[tuple[RunningEngine, RunningEngine]]:
    started: list[RunningEngine] = []
    try:
        for name in ("node-a", "node-b"):
            started.append(_node(module_dir, name, postgres, shared_redis, openai_fake))
        yield started[0], started[1]
    finally:
        for engine in started:
            stop_engine(engine)


def test_a_conversation_written_on_one_node_is_served_by_the_other(
    nodes: tuple[RunningEngine, RunningEngine], postgres: Service
) -> None:
    a, b = nodes
    ann = as_user("ann")
    first = httpx.post(f"{a.url}/api/v1/chat", json={"message": "mail me at ann@example.org"}, headers=ann)
    assert first.status_code == 200, first.text
    conversation = first.json()["conversation_id"]
    second = httpx.post(f"{b.url}/api/v1/chat", json={"message": "again", "conversation_id": conversation}, headers=ann)
    assert second.status_code == 200, second.text
    assert "(turn 2)" in second.json()["reply"]  # node B read node A's turn as context
    page = httpx.get(f"{b.url}/api/v1/history", params={"conversation_id": conversation}, headers=ann).json()
    assert [m["role"] for m in page["messages"]] == ["assistant", "user", "assistant", "user"]
    assert page["messages"][3]["content"] == "mail me at [email]"  # masked before it was stored
    rows = asyncio.run(_fetch(postgres.url, "SELECT content FROM messages WHERE conversation_id = $1", conversation))
    assert len(rows) == 4 and not any("mail me" in r["content"] or "again" in r["content"] for r in rows)  # sealed
    for node in nodes:
        assert httpx.get(f"{node.url}/ready").json()["checks"]["storage"] is True
        assert not (Path(node.settings().data_dir) / "history.sqlite3").exists()


def test_concurrent_turns_on_both_nodes_are_all_committed(
    nodes: tuple[RunningEngine, RunningEngine], postgres: Service
) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            calls = [
                client.post(f"{nodes[i % 2].url}/api/v1/chat", json={"message": f"m{i}"}, headers=as_user(f"crowd-{i}"))
                for i in range(40)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(burst()) == [200] * 40
    query = "SELECT user_name, count(*) AS n FROM messages WHERE user_name LIKE 'crowd-%' GROUP BY user_name"
    counts = {r["user_name"]: r["n"] for r in asyncio.run(_fetch(postgres.url, query))}
    assert counts == {f"crowd-{i}": 2 for i in range(40)}


def test_a_websocket_id_claimed_on_one_node_is_replayed_not_regenerated_on_the_other(
    nodes: tuple[RunningEngine, RunningEngine], openai_fake: FakeUpstream
) -> None:
    a, b = nodes
    openai_fake.reset()
    openai_fake.behaviour.chunk_delay, openai_fake.behaviour.stream_chunks = 0.1, 10
    full = "".join(WORDS[i % len(WORDS)] for i in range(10))
    frame = {"type": "chat", "id": "move-1", "message": "answer me on any node", "model": "cloud"}
    with Client(a, "bob") as first:
        first.send(frame)
        assert first.recv()["seq"] == 0  # node A claimed the id and is generating
    with Client(b, "bob") as second:  # the client reconnects to the other node and re-sends
        second.send(frame)
        chunks, done = second.reply("move-1")
        second.send({"type": "resume", "last_id": None})
        resumed = second.recv()
    assert chunks == [] and done["type"] == "done" and done["replayed"] is True and done["reply"] == full
    assert resumed["id"] == "move-1" and resumed["message_id"] == done["message_id"]
    assert len(openai_fake.calls) == 1  # one model call across both nodes


def test_the_rate_limit_is_shared_by_both_nodes(
    nodes: tuple[RunningEngine, RunningEngine], shared_redis: Service
) -> None:
    statuses, cat = [], as_user("cat")
    for i in range(2 * BURST):
        node = nodes[i % 2]
        response = httpx.post(f"{node.url}/api/v1/chat", json={"message": f"hi {i}"}, headers=cat)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
    # In-memory buckets would let each node admit BURST: 2 * BURST in all.
    assert statuses == [200] * BURST + [429] * BURST
    assert redis.Redis.from_url(shared_redis.url).exists("assistant:test:ratelimit:cat") == 1
    refused = sum(node.metric("assistant_rate_limited_total", route="/api/v1/chat") for node in nodes)
    assert refused == BURST


def test_with_redis_down_a_node_fails_open_to_its_own_limits_and_recovers(
    tmp_path: Path, postgres: Service, openai_fake: FakeUpstream
) -> None:
    own = _start_redis(tmp_path / "redis")
    engine = None
    try:
        engine = _node(tmp_path, "alone", postgres, own, openai_fake)
        chat = f"{engine.url}/api/v1/chat"

        def send(user: str) -> int:
            return httpx.post(chat, json={"message": "x"}, headers=as_user(user)).status_code

        assert [send("dan") for _ in range(BURST)] == [200] * 4
        stop_process(own.process, signal.SIGKILL)
        started = time.monotonic()
        statuses = [send("eve") for _ in range(BURST + 2)]
        elapsed = time.monotonic() - started
        # Fail open, but to this worker's own buckets with the same limits, and without waiting on Redis.
        assert statuses == [200] * BURST + [429] * 2
        assert elapsed < 3, elapsed
        assert engine.log_lines("rate limit: Redis unreachable", "WARNING")
        own = _start_redis(own.root, own.port)
        time.sleep(1.1)  # the limiter probes Redis again once a second
        assert send("fay") == 200
        assert redis.Redis.from_url(own.url).exists("assistant:test:ratelimit:fay") == 1
        assert engine.log_lines("rate limit: Redis answers again after")
    finally:
        if engine is not None:
            stop_engine(engine)
        stop_process(own.process)


def test_a_key_made_on_one_node_works_on_both_and_a_revocation_reaches_both(
    nodes: tuple[RunningEngine, RunningEngine], postgres: Service
) -> None:
    a, b = nodes
    made = subprocess.run(
        [sys.executable, "-m", "assistantctl.engine.keys_cli", "--settings", str(a.settings_path), "create"]
        + ["--user", "kai", "--scopes", "chat"],
        capture_output=True,
        text=True,
        check=True,
    )
    key, key_id = json.loads(made.stdout)["key"], json.loads(made.stdout)["record"]["id"]
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.4"}
    for node in nodes:
        wait_for_key(node.url, headers)
    assert [httpx.post(f"{n.url}/api/v1/chat", json={"message": "hi"}, headers=headers).status_code for n in nodes] == [
        200,
        200,
    ]
    stored = asyncio.run(_fetch(postgres.url, "SELECT digest FROM api_keys WHERE id = $1", key_id))
    assert len(stored) == 1 and key not in stored[0]["digest"]
    # Revoked through node B's settings: the same PostgreSQL table.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "assistantctl.engine.keys_cli",
            "--settings",
            str(b.settings_path),
            "revoke",
            key_id,
        ],
        capture_output=True,
        check=True,
    )
    for node in nodes:
        wait_for_key(node.url, headers, known=False)
    assert [httpx.post(f"{n.url}/api/v1/chat", json={"message": "hi"}, headers=headers).status_code for n in nodes] == [
        401,
        401,
    ]
