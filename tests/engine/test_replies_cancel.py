"""A cancel frame against a reply's last step: once the complete reply is being written, the write
is not cut (cutting it could store the reply and still release its claim, so a re-send would call
the model again and store the turn twice)."""

from __future__ import annotations

import asyncio

from assistantctl.engine.api.replies import Job, Replies


async def test_a_cancel_while_the_reply_is_stored_lets_the_write_finish() -> None:
    replies = Replies()
    written = asyncio.Event()

    async def store() -> None:
        await asyncio.sleep(0.05)
        written.set()

    job = Job("m-1")
    job.storing = True
    replies._jobs[("alice", "m-1")] = (job, asyncio.create_task(store()))
    assert replies.cancel("alice", "m-1")  # acknowledged: its done frame follows, no error frame
    await asyncio.wait_for(written.wait(), 1)
    assert not job.cancelled


async def test_a_cancel_while_the_model_answers_stops_the_task() -> None:
    replies = Replies()
    job = Job("m-2")
    task = asyncio.create_task(asyncio.sleep(10))
    replies._jobs[("alice", "m-2")] = (job, task)
    assert replies.cancel("alice", "m-2")
    await asyncio.sleep(0)
    assert job.cancelled and task.cancelled()
