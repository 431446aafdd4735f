"""An approval question whose waiting worker died (killed mid-question) in both stores (the node's
SQLite file, a real PostgreSQL shared by nodes): once its time is up nothing can answer it, so a
later "yes" in that chat is an ordinary message or answers the question really waiting, and the
next question asked clears it away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from assistantctl.engine.history.postgres import PostgresHistory
from assistantctl.engine.security.crypto import Keyring
from assistantctl.engine.security.pii import Masker
from assistantctl.engine.tools.approval import ApprovalStore, Question
from assistantctl.engine.tools.approval_postgres import PostgresApprovalStore

pytestmark = pytest.mark.slow


@pytest.fixture
async def store(store_dsn: str | None, tmp_path: Path) -> AsyncIterator[ApprovalStore | PostgresApprovalStore]:
    if store_dsn is None:
        yield ApprovalStore(tmp_path / "approvals.sqlite3")
        return
    history = PostgresHistory(store_dsn, Keyring([]), Masker([]))
    await history.open()
    try:
        await history.pool.execute("DELETE FROM tool_approvals")
        yield PostgresApprovalStore(history)
    finally:
        await history.close()


async def question_ids(store: ApprovalStore | PostgresApprovalStore) -> set[str]:
    if isinstance(store, PostgresApprovalStore):
        return {row[0] for row in await store.history.pool.fetch("SELECT id FROM tool_approvals")}
    async with store._db() as db, db.execute("SELECT id FROM approvals") as cursor:
        return {row[0] for row in await cursor.fetchall()}


async def test_a_question_whose_waiter_died_is_never_answered_and_is_cleared_away(store) -> None:
    dead = Question(id="q-dead", tool="shell", arguments="{}", timeout_seconds=0.5)
    await store.open(dead, "ann", "chat-1")  # its worker is killed: nobody waits, nobody deletes it
    await asyncio.sleep(1.0)
    assert not await store.answer_latest("ann", "chat-1", True)  # a later "yes" is just a message
    assert not await store.answer("q-dead", "ann", True)

    live = Question(id="q-live", tool="shell", arguments="{}", timeout_seconds=30)
    await store.open(live, "ann", "chat-1")
    assert await question_ids(store) == {"q-live"}
    assert await store.answer_latest("ann", "chat-1", True)
    assert await store.wait("q-live", 5) is True


async def test_questions_of_an_engine_before_expiry_count_as_expired(tmp_path: Path) -> None:
    path = tmp_path / "approvals.sqlite3"
    async with aiosqlite.connect(path) as db:  # the file as an older engine left it
        await db.execute(
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, user TEXT NOT NULL, "
            "chat TEXT NOT NULL, tool TEXT NOT NULL, asked_at REAL NOT NULL, answer INTEGER)"
        )
        await db.execute("INSERT INTO approvals VALUES ('q-old', 'ann', 'chat-1', 'shell', 0, NULL)")
        await db.commit()
    store = ApprovalStore(path)
    assert not await store.answer_latest("ann", "chat-1", True)
    await store.open(Question(id="q-new", tool="shell", arguments="{}", timeout_seconds=30), "ann", "chat-1")
    assert await question_ids(store) == {"q-new"}
