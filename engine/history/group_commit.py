"""Group commit: requests hand their rows to one task and wait until the batch holding them commits.

Both history backends use it; each supplies `commit(batch)`, one transaction for every request's
rows in the batch. When a batch fails, its items are committed again one at a time, so only the
request whose rows cannot be stored fails (with what its own commit raised) and no request fails
because of another's. The loop keeps running whatever a commit raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")

BATCH = 512


class GroupCommit(Generic[Item]):
    def __init__(self, commit: Callable[[list[Item]], Awaitable[None]], batch: int = BATCH) -> None:
        """`commit` must be all or nothing (one transaction): after it raises, nothing of the
        batch is stored, so committing the items again one by one stores each exactly once."""
        self._commit = commit
        self._batch = batch
        self._pending: asyncio.Queue[tuple[Item, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, item: Item) -> None:
        """Returns once the transaction holding `item` has committed; raises what the commit of
        `item` raised (alone, when its batch failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((item, future))
        await future

    async def _loop(self) -> None:
        while True:
            batch = [await self._pending.get()]
            while not self._pending.empty() and len(batch) < self._batch:
                batch.append(self._pending.get_nowait())
            try:
                await self._commit([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - a failed commit fails requests, never the loop
                if len(batch) == 1:
                    _resolve(batch[0][1], exc)
                else:
                    await self._one_by_one(batch)
                continue
            for _, future in batch:
                _resolve(future, None)

    async def _one_by_one(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        """After a failed batch: each item in a transaction of its own, so only the bad ones fail."""
        for item, future in batch:
            try:
                await self._commit([item])
            except Exception as exc:  # noqa: BLE001 - this item's own failure, for its request only
                _resolve(future, exc)
            else:
                _resolve(future, None)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
