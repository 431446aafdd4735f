"""The history's background upkeep: retention, then key rotation; at start and every hour.

One worker of the whole deployment does it at a time: it holds a lease row in the history database
(renewed after every batch; a worker that dies lets it expire). Rotation re-seals the records that
another key than the keyring's current one sealed, a small batch per transaction, remembering how
far it got, so requests are never held up for long and old and new records stay readable
throughout. A record no key opens is left as it is (the admin route counts it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any, Protocol

from .. import logs
from ..security.crypto import Keyring, Unreadable

INTERVAL_SECONDS = 3600.0
_LEASE_SECONDS = 120.0
_BATCH = 200
_PAUSE_SECONDS = 0.01  # between batches: the writers of every worker get the database in between
_DAY = 86_400.0

Sealed = tuple[int, str, "str | None"]


class Lifecycle(Protocol):
    """What both history backends provide (history/lifecycle_sqlite.py, history/lifecycle_postgres.py)."""

    async def lease(self, holder: str, seconds: float) -> bool: ...
    async def release(self, holder: str) -> None: ...
    async def purge(self, cutoff: float) -> int: ...
    async def rotated_until(self, key_id: str) -> int: ...
    async def save_rotated(self, key_id: str, seq: int) -> None: ...
    async def not_under(self, key_id: str, after: int, limit: int) -> list[Any]: ...
    async def store_resealed(self, rows: list[tuple[str, str, int, str | None]]) -> None: ...
    async def key_counts(self) -> dict[str | None, int]: ...


class Upkeep:
    def __init__(self, lifecycle: Lifecycle, keyring: Keyring, retention_days: float | None) -> None:
        self.lifecycle = lifecycle
        self.keyring = keyring
        self.retention_days = retention_days
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """One pass, if no other worker is making one."""
        if not await self.lifecycle.lease(self.holder, _LEASE_SECONDS):
            return
        try:
            if self.retention_days is not None:
                deleted = await self.lifecycle.purge(time.time() - self.retention_days * _DAY)
                if deleted:
                    logs.event(logs.APP, logging.INFO, f"history retention deleted {deleted} messages")
            if self.keyring.ids:
                await self._rotate()
        finally:
            await self.lifecycle.release(self.holder)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run()
            except Exception as exc:  # noqa: BLE001 - the next pass tries again; never kill the worker
                logs.event(logs.APP, logging.WARNING, f"history upkeep failed, next try in an hour: {exc!r}")
            await asyncio.sleep(INTERVAL_SECONDS)

    async def _rotate(self) -> None:
        current = self.keyring.current
        after = await self.lifecycle.rotated_until(current)
        resealed = unreadable = 0
        while True:
            rows = await self.lifecycle.not_under(current, after, _BATCH)
            if not rows:
                break
            updates, failed = await asyncio.to_thread(self._reseal, rows)
            if updates:
                await self.lifecycle.store_resealed(updates)
            resealed, unreadable = resealed + len(updates), unreadable + failed
            after = rows[-1][0]
            await self.lifecycle.save_rotated(current, after)
            if not await self.lifecycle.lease(self.holder, _LEASE_SECONDS):
                return  # it expired and another worker took over: it resumes from `after`
            await asyncio.sleep(_PAUSE_SECONDS)
        if resealed or unreadable:
            level = logging.WARNING if unreadable else logging.INFO
            logs.event(
                logs.APP,
                level,
                f"history key rotation to {current}: {resealed} records re-sealed, {unreadable} no key opens",
            )

    def _reseal(self, rows: list[Sealed]) -> tuple[list[tuple[str, str, int, str | None]], int]:
        """Off the event loop: the rows' text under the current key."""
        updates, failed = [], 0
        for seq, content, key_id in rows:
            try:
                sealed = self.keyring.reseal(content, key_id)
            except Unreadable:
                failed += 1
                continue
            if sealed is not None:
                updates.append((sealed[0], sealed[1], seq, key_id))
        return updates, failed


async def key_status(lifecycle: Lifecycle, keyring: Keyring) -> dict[str, Any]:
    """Records per key id, and how many the rotation still has to re-seal."""
    counts = await lifecycle.key_counts()
    records = {key: n for key, n in counts.items() if key}
    current = keyring.current
    pending = sum(n for key, n in counts.items() if key != current) if keyring.ids else 0
    return {
        "current": current or None,
        "keys": keyring.ids,
        "records": records,
        "plaintext": counts.get("", 0),
        "unlabelled": counts.get(None, 0),
        "pending": pending,
        "unknown_keys": sorted(key for key in records if key not in keyring.ids),
    }
