"""The websocket channel's claims on client message ids, in both history stores (SQLite per node, a
real PostgreSQL shared by nodes): a claim's silence is measured by the store's own clock, its
holder's renewal makes it live again, and only a claim silent for longer than asked can be taken
over, by one taker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from assistantctl.engine.history.postgres import PostgresHistory
from assistantctl.engine.history.sqlite import History
from assistantctl.engine.security.crypto import Keyring
from assistantctl.engine.security.pii import Masker

pytestmark = pytest.mark.slow


@pytest.fixture
async def history(store_dsn: str | None, tmp_path: Path) -> AsyncIterator[History | PostgresHistory]:
    keys, masker = Keyring([]), Masker([])
    store = PostgresHistory(store_dsn, keys, masker) if store_dsn else History(str(tmp_path), keys, masker)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def go_silent(history: History | PostgresHistory, seconds: float) -> None:
    """Move every claim's last sign of life `seconds` into the past, as if its holder had died."""
    sql = "UPDATE client_messages SET claimed_at = claimed_at - {}"
    if isinstance(history, PostgresHistory):
        await history.pool.execute(sql.format("$1"), seconds)
    else:
        db = history.client_messages.db
        assert db is not None
        await db.execute(sql.format("?"), (seconds,))


async def test_only_a_claim_silent_for_longer_than_asked_is_taken_over_and_by_one_taker(history) -> None:
    claims = history.client_messages
    assert await claims.claim("ann", "c-1", "conv-1", "m-holder") is None
    record = await claims.claim("ann", "c-1", "conv-1", "m-other")
    assert record is not None and record.message_id == "m-holder"
    assert 0 <= record.silent_seconds < 5
    assert not await claims.take_over("ann", "c-1", "m-holder", "m-other", silent_for=10)

    await go_silent(history, 30)
    silent = await claims.get("ann", "c-1")
    assert silent is not None and 30 <= silent.silent_seconds < 35
    await claims.renew("ann", "c-1", "m-holder")  # the holder was only slow: it lives
    renewed = await claims.get("ann", "c-1")
    assert renewed is not None and renewed.silent_seconds < 5
    assert not await claims.take_over("ann", "c-1", "m-holder", "m-other", silent_for=10)

    await go_silent(history, 30)
    taken = await asyncio.gather(
        claims.take_over("ann", "c-1", "m-holder", "m-first", silent_for=10),
        claims.take_over("ann", "c-1", "m-holder", "m-second", silent_for=10),
    )
    assert sorted(taken) == [False, True]
    now = await claims.get("ann", "c-1")
    assert now is not None and now.message_id in {"m-first", "m-second"} and now.silent_seconds < 5
    await claims.renew("ann", "c-1", "m-holder")  # the old holder's renewal no longer touches it
    assert (await claims.get("ann", "c-1")).message_id == now.message_id
