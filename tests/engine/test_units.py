"""In-process checks of the small parts: gate ordering, breaker states, token buckets, log lines."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from assistantctl.engine.limits.buckets import RateLimiter
from assistantctl.engine.logs import JsonFormatter, TextFormatter
from assistantctl.engine.models.breaker import Breaker
from assistantctl.engine.models.gate import Gate, QueueFull
from assistantctl.engine.security.pii import Masker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_gate_serves_waiters_by_priority_then_arrival_and_bounds_the_queue() -> None:
    gate = Gate(limit=1, queue_size=3)
    await gate.acquire()
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release()

    tasks = [asyncio.create_task(wait(n, p)) for n, p in (("late", 9), ("first", 0), ("second", 0))]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await gate.acquire(0)
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["first", "second", "late"]
    assert gate.active == 0 and gate.waiting == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    gate = Gate(limit=1, queue_size=5)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert gate.waiting == 0
    gate.release()
    assert gate.active == 0


def test_breaker_opens_half_opens_with_one_probe_and_closes() -> None:
    clock = Clock()
    breaker = Breaker("m", threshold=2, cooldown=10, clock=clock)
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.begin()
    clock.now += 10
    assert breaker.begin()  # the probe
    assert not breaker.begin()  # only one at a time
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.begin()
    breaker.success()
    assert breaker.state == "closed" and breaker.begin()


def test_token_bucket_allows_a_burst_then_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=60, burst=2, clock=clock)
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")[0]
    clock.now += 1.0
    assert limiter.allow("a")[0]
    assert not limiter.allow("a")[0]


def _record(msg: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("engine.model", logging.WARNING, __file__, 1, msg, None, None)
    record.created = 1795449600.123
    record.fields = fields
    return record


def test_text_log_lines_follow_the_contract() -> None:
    line = TextFormatter(Masker(["email"])).format(
        _record('upstream "500" for a@b.io', request_id="9f1c2e", user=None, model="cloud", latency_ms=503.04)
    )
    assert line == (
        "2026-11-23T16:00:00.123Z WARNING engine.model request_id=9f1c2e user=- model=cloud latency_ms=503.0 "
        'msg="upstream \\"500\\" for [email]"'
    )


def test_json_log_lines_have_the_same_keys() -> None:
    data = json.loads(JsonFormatter(Masker([])).format(_record("x", request_id="r", user="u")))
    assert data == {
        "time": "2026-11-23T16:00:00.123Z",
        "level": "WARNING",
        "logger": "engine.model",
        "request_id": "r",
        "user": "u",
        "msg": "x",
    }
