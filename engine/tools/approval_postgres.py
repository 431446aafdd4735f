"""Approval questions and answers in PostgreSQL, for several engine nodes (engine/tools/approval.py).

With the history in PostgreSQL (`history_backend: postgres`), an answer may reach any worker of
any node: a websocket frame or a chat "yes" lands wherever the load balancer or the platform's
webhook sends it, while the request that asked waits on the node that runs the model. The
questions therefore live in the table `tool_approvals` of the history's database (created with
the other history tables, engine/history/postgres.py), through the history's pool.

The waiting request polls its row every `_POLL_SECONDS` rather than LISTENing: LISTEN holds one
pooled connection per waiting question for up to `timeout_seconds`, and a handful of waiting
approvals would then starve the history's pool; one indexed SELECT by primary key every 0.1 s
per open question costs the server next to nothing and answers within a poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import asyncpg

from ..history.postgres import DB_NOW

if TYPE_CHECKING:
    from ..history.postgres import PostgresHistory
    from .approval import Question

_POLL_SECONDS = 0.1


class PostgresApprovalStore:
    """`ApprovalStore` over the history's asyncpg pool; every statement autocommits, so a question
    or an answer is visible to every node at once."""

    errors: tuple[type[Exception], ...] = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

    def __init__(self, history: PostgresHistory) -> None:
        self.history = history  # its pool exists only once the history is open

    async def open(self, question: Question, user: str, chat: str) -> None:
        """Ask `question`; the questions whose time is up go (their waiters died with their worker).
        Expiry is the database's clock, the same for every node."""
        async with self.history.pool.acquire() as db, db.transaction():
            await db.execute(
                f"DELETE FROM tool_approvals WHERE answer IS NULL AND (expires_at IS NULL OR expires_at <= {DB_NOW})"
            )
            await db.execute(
                "INSERT INTO tool_approvals (id, user_name, chat, tool, asked_at, expires_at) "
                f"VALUES ($1, $2, $3, $4, $5, {DB_NOW} + $6)",
                question.id,
                user,
                chat,
                question.tool,
                time.time(),
                question.timeout_seconds,
            )

    async def answer(self, question_id: str, user: str, approve: bool) -> bool:
        """Answer the user's open question `question_id`; False when there is none (answered, gone,
        or its time is up)."""
        status = await self.history.pool.execute(
            "UPDATE tool_approvals SET answer = $1 "
            f"WHERE id = $2 AND user_name = $3 AND answer IS NULL AND expires_at > {DB_NOW}",
            approve,
            question_id,
            user,
        )
        return status == "UPDATE 1"

    async def answer_latest(self, user: str, chat: str, approve: bool) -> bool:
        """Answer the newest open question of `user` in `chat`; False when none is open."""
        status = await self.history.pool.execute(
            "UPDATE tool_approvals SET answer = $1 WHERE answer IS NULL AND id = (SELECT id FROM tool_approvals "
            f"WHERE user_name = $2 AND chat = $3 AND answer IS NULL AND expires_at > {DB_NOW} "
            "ORDER BY asked_at DESC LIMIT 1)",
            approve,
            user,
            chat,
        )
        return status == "UPDATE 1"

    async def wait(self, question_id: str, timeout: float) -> bool | None:
        """The answer to `question_id`, or None after `timeout` seconds; the question is then gone
        (a late answer, on any node, finds nothing to answer)."""
        pool = self.history.pool
        try:
            async with asyncio.timeout(timeout):
                while True:
                    answer = await pool.fetchval("SELECT answer FROM tool_approvals WHERE id = $1", question_id)
                    if answer is not None:
                        return bool(answer)
                    await asyncio.sleep(_POLL_SECONDS)
        except TimeoutError:
            return None
        finally:  # answered, timed out or cancelled with its request: nobody waits any more
            await asyncio.shield(pool.execute("DELETE FROM tool_approvals WHERE id = $1", question_id))
