"""Limits that hold: per user, per model (requests and tokens per minute), for the whole deployment,
and a daily token budget per user; exact across the workers of a node and across nodes.

Every user is a verified JWT subject (the body's `user` field picks nobody). The builtin model's
replies cost about 24 tokens for a one-word message (input + output words).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from test_shared_state import Service, _start_redis

from assistantctl.engine.limits.buckets import CHARGE, MemoryBuckets, Take
from assistantctl.engine.limits.buckets_redis import RedisRateLimiter
from assistantctl.engine.limits.buckets_sqlite import SqliteBuckets
from assistantctl.engine.settings import (
    ChannelSettings,
    GlobalRateLimitSettings,
    RateLimitSettings,
    SecuritySettings,
)
from engine_process import RunningEngine, StartEngine, model, start_engine, stop_engine
from processes import stop_process
from ws_client import Client

JWT_KEY = "limits-test-jwt-key-of-32-bytes!!"
HI = [{"role": "user", "content": "hi"}]
BURST = 3  # with requests_per_minute 6: one token back every 10 s, so at most one comes back in a test


def token(sub: str) -> dict[str, str]:
    value = jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, JWT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {value}"}


def secured(**overrides: Any) -> dict[str, Any]:
    """Engine arguments with JWT on (so users are distinct) and generous limits unless overridden."""
    secrets = {"jwt": JWT_KEY, **overrides.pop("secrets", {})}
    return {"security": SecuritySettings(jwt_secret="jwt"), "secrets": secrets, **overrides}


def chat(engine: RunningEngine, user: str, path: str = "/v1/chat/completions", **body: Any) -> httpx.Response:
    payload = {"message": "hi", **body}
    if path == "/v1/chat/completions":
        payload = {"messages": HI, **body}
    return httpx.post(engine.url + path, json=payload, headers=token(user), timeout=10)


def burst(urls: list[str], user: str, count: int, **body: Any) -> list[httpx.Response]:
    """`count` chat requests at once, spread over `urls`. Each goes on a connection of its own,
    opened beforehand one at a time, so the kernel spreads the connections over the workers."""

    async def run() -> list[httpx.Response]:
        clients = [httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=10) for i in range(count)]
        try:
            for client in clients:
                await client.get("/health")
                await asyncio.sleep(0.02)  # let another worker be the one waiting in accept()
            calls = [
                c.post("/v1/chat/completions", json={"messages": HI, **body}, headers=token(user)) for c in clients
            ]
            return list(await asyncio.gather(*calls))
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(run())


def assert_refused(response: httpx.Response, code: str = "rate_limited") -> int:
    """The response is a 429 with `code` and a Retry-After in whole seconds; returns those seconds."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == code
    wait = int(response.headers["retry-after"])
    assert wait >= 1
    return wait


def refusals(engine: RunningEngine, limit: str) -> float:
    return engine.metric("assistant_limit_refusals_total", limit=limit)


def test_two_workers_share_one_bucket_per_user(engine_factory: StartEngine) -> None:
    engine = engine_factory(
        [model("local")],
        workers=2,
        **secured(rate_limit=RateLimitSettings(requests_per_minute=6, burst=BURST, key="user")),
    )
    statuses = [r.status_code for r in burst([engine.url], "ann", 20)]
    # Buckets per worker would let each of the two workers admit BURST.
    assert statuses.count(200) in (BURST, BURST + 1), statuses
    assert statuses.count(429) == 20 - statuses.count(200)
    assert chat(engine, "bob").status_code == 200  # another user has a bucket of their own
    assert refusals(engine, "rate_limit") == statuses.count(429)


def test_a_models_requests_per_minute_is_one_quota_for_every_user(engine_factory: StartEngine) -> None:
    engine = engine_factory([model("local", requests_per_minute=2), model("spare")], workers=2, **secured())
    assert [chat(engine, user).status_code for user in ("ann", "bob")] == [200, 200]
    wait = assert_refused(chat(engine, "cat"))
    assert wait <= 31  # one request back every 30 s
    assert_refused(chat(engine, "ann", "/api/v1/chat"))
    assert chat(engine, "cat", model="spare").status_code == 200  # another model's quota is its own
    assert refusals(engine, "model_requests") == 2


def test_a_models_tokens_per_minute_is_charged_after_the_call_and_refuses_while_empty(
    engine_factory: StartEngine,
) -> None:
    engine = engine_factory(
        [model("local", tokens_per_minute=12), model("streamed", tokens_per_minute=12), model("spare")], **secured()
    )
    first = chat(engine, "ann")
    assert first.status_code == 200
    spent = first.json()["usage"]["total_tokens"]
    assert spent > 12  # the call was admitted with 12 tokens left and went into debt
    wait = assert_refused(chat(engine, "bob"))
    assert abs(wait - (spent - 12 + 1) * 60 / 12) <= 2  # until the debt is paid back at 12 a minute
    body = {"messages": HI, "model": "streamed", "stream": True}
    with httpx.stream("POST", engine.url + "/v1/chat/completions", json=body, headers=token("ann")) as streamed:
        assert streamed.status_code == 200
        assert streamed.read().decode().rstrip().endswith("data: [DONE]")
    assert_refused(chat(engine, "bob", "/api/v1/chat/stream", model="streamed"))  # the stream was charged
    assert chat(engine, "bob", model="spare").status_code == 200
    assert refusals(engine, "model_tokens") == 2


def test_the_global_limit_counts_every_user_together(engine_factory: StartEngine) -> None:
    limit = GlobalRateLimitSettings(requests_per_minute=6, burst=BURST)
    engine = engine_factory([model("local")], workers=2, **secured(global_rate_limit=limit))
    statuses = [chat(engine, f"user-{i}").status_code for i in range(BURST + 2)]
    assert statuses == [200] * BURST + [429] * 2
    assert_refused(chat(engine, "someone-new"))
    assert refusals(engine, "global") == 3


def _seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    return (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now).total_seconds()


def test_a_daily_token_budget_refuses_until_the_next_utc_day_everywhere(engine_factory: StartEngine) -> None:
    engine = engine_factory(
        [model("local")],
        daily_tokens_per_user=30,
        channels=[ChannelSettings(name="websocket", path="/ws")],
        **secured(),
    )
    assert [chat(engine, "ann").status_code for _ in range(2)] == [200, 200]  # 30 > 24 > 0: both admitted
    for path in ("/api/v1/chat", "/api/v1/chat/stream", "/v1/chat/completions"):
        wait = assert_refused(chat(engine, "ann", path), "budget_exhausted")
        assert abs(wait - _seconds_to_utc_midnight()) <= 5
    with Client(engine, None, token("ann")) as client:
        client.send({"type": "chat", "id": "over", "message": "hi"})
        frame = client.recv()
    assert frame["type"] == "error" and frame["code"] == "budget_exhausted" and frame["retry_after"] >= 1
    assert chat(engine, "bob").status_code == 200  # the budget is per user
    assert refusals(engine, "daily_tokens") == 4


@pytest.fixture
def redis_service(tmp_path: Path) -> Iterator[Service]:
    service = _start_redis(tmp_path / "redis")
    try:
        yield service
    finally:
        stop_process(service.process)


@pytest.mark.slow
def test_two_nodes_sharing_one_redis_hold_every_limit_exactly(tmp_path: Path, redis_service: Service) -> None:
    nodes: list[RunningEngine] = []
    try:
        for name in ("node-a", "node-b"):
            nodes.append(
                start_engine(
                    tmp_path / name,
                    [model("local", tokens_per_minute=12), model("spare")],
                    workers=2,
                    rate_limit_backend="redis",
                    rate_limit_redis_url_secret="redis",
                    daily_tokens_per_user=30,
                    **secured(
                        rate_limit=RateLimitSettings(requests_per_minute=6, burst=BURST, key="user"),
                        secrets={"redis": redis_service.url},
                    ),
                )
            )
        a, b = nodes
        statuses = [r.status_code for r in burst([a.url, b.url], "ann", 20, model="spare")]
        assert statuses.count(200) in (BURST, BURST + 1), statuses  # ann's one bucket, shared by 4 workers
        assert chat(a, "bob").status_code == 200  # the model's 12 tokens a minute, spent on node A ...
        assert_refused(chat(b, "cat"))  # ... are spent on node B too
        assert chat(a, "dan", model="spare").status_code == 200
        assert chat(b, "dan", model="spare").status_code == 200  # 48 tokens spent across both nodes
        assert_refused(chat(a, "dan", model="spare"), "budget_exhausted")
        assert_refused(chat(b, "dan", model="spare"), "budget_exhausted")
    finally:
        for node in nodes:
            stop_engine(node)


# --- the buckets themselves, in process ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_refused_decision_changes_no_bucket() -> None:
    buckets = MemoryBuckets(Clock())
    user, quota = Take("rate_limit", "ann", 1.0, 2), Take("model_requests", "#m", 1 / 60, 1)
    assert buckets.decide([user, quota]).allowed
    refused = buckets.decide([user, quota])
    assert (refused.allowed, refused.limit, round(refused.wait)) == (False, "model_requests", 60)
    assert [buckets.decide([user]).allowed for _ in range(2)] == [True, False]  # ann still had 1 left


def test_a_charge_puts_the_bucket_into_debt_and_the_wait_covers_it() -> None:
    clock = Clock()
    buckets = MemoryBuckets(clock)
    tokens = Take("model_tokens", "#t", 1.0, 10, cost=0)
    assert buckets.decide([tokens]).allowed
    assert buckets.decide([Take("model_tokens", "#t", 1.0, 10, cost=30, need=CHARGE)]).allowed  # now at -20
    refused = buckets.decide([tokens])
    assert (refused.allowed, refused.wait) == (False, 21.0)
    clock.now += 21
    assert buckets.decide([tokens]).allowed


async def test_an_unusable_sqlite_file_fails_open_to_this_workers_memory(tmp_path: Path) -> None:
    buckets = SqliteBuckets(tmp_path)  # a directory: SQLite cannot open it
    take = Take("rate_limit", "ann", 0.0, 2, reset_in=60)
    try:
        assert [(await buckets.apply([take])).allowed for _ in range(3)] == [True, True, False]
    finally:
        await buckets.aclose()


async def test_an_unreachable_redis_fails_open_to_the_nodes_own_buckets() -> None:
    fallback = MemoryBuckets()
    buckets = RedisRateLimiter("redis://127.0.0.1:9/0", "test:", fallback)  # nothing listens on port 9
    take = Take("rate_limit", "ann", 0.0, 2, reset_in=60)
    try:
        verdicts = await asyncio.gather(*(buckets.apply([take]) for _ in range(3)))
        assert [v.allowed for v in verdicts] == [True, True, False]
    finally:
        await buckets.aclose()
