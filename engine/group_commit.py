"""Group commit: requests hand their rows to one task and wait until the batch holding them commits.

Both history backends use it; each supplies `commit(batch)`, one transaction for every request's
rows in the batch. A batch that fails fails every request in it and leaves the loop running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")

BATCH = 512


class GroupCommit(Generic[Item]):
    def __init__(self, commit: Callable[[list[Item]], Awaitable[None]], batch: int = BATCH) -> None:
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
        """Returns once the transaction holding `item` has committed; raises what the commit raised."""
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
                outcome: BaseException | None = None
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the loop
                outcome = exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(outcome) if outcome else future.set_result(None)
