"""Token buckets in a SQLite file, shared by the workers of one node.

uvicorn's workers are separate processes, so buckets in memory would let each of them admit the
whole limit. Here every decision is one short `BEGIN IMMEDIATE` transaction on
`<data_dir>/limits.sqlite3` (WAL, no fsync: losing the last buckets in a power cut is harmless),
which SQLite serialises across processes, so the limits are exact for the node. The buckets also
survive a restart, daily budgets included.

Each worker runs its transactions in one thread of its own, off the event loop. Decisions that
arrive while a transaction runs wait for it and then go together in the next one (in arrival
order), so a busy worker takes the file lock once per batch rather than once per request
(bench/limits.py measures the cost). If the file fails (disk full, unreadable), the worker FAILS
OPEN to its own in-memory buckets and logs one WARNING, like the Redis store; the next batch
tries the file again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import logs
from .buckets import Batches, MemoryBuckets, Take, Verdict, expires, settle

_BUSY_TIMEOUT_SECONDS = 2.0
_PRUNE_SECONDS = 60.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
  key TEXT PRIMARY KEY, level REAL NOT NULL, at REAL NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID
"""
_UPSERT = (
    "INSERT INTO buckets (key, level, at, expires) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET level = excluded.level, at = excluded.at, expires = excluded.expires"
)


class SqliteBuckets:
    """The store interface (`apply`, `aclose`) over one SQLite file; `path` is created if absent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fallback = MemoryBuckets()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="limits")
        self._db: sqlite3.Connection | None = None
        self._batches = Batches(self._settle_batch)
        self._pruned_at = 0.0
        self._outage = False

    async def apply(self, takes: Sequence[Take]) -> Verdict:
        return await self._batches.apply(takes)

    async def aclose(self) -> None:
        await self._batches.wait_idle()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    async def _settle_batch(self, batch: list[Sequence[Take]]) -> list[Verdict]:
        try:
            verdicts = await asyncio.get_running_loop().run_in_executor(self._executor, self._decide, batch)
        except sqlite3.Error as exc:
            self._went_down(exc)
            return [self.fallback.decide(takes) for takes in batch]
        self._came_back()
        return verdicts

    def _decide(self, batch: list[Sequence[Take]]) -> list[Verdict]:
        """In the store's thread: every decision of the batch in one IMMEDIATE transaction."""
        try:
            db = self._connection()
            now = time.time()  # the wall clock: the same in every worker, and across restarts
            db.execute("BEGIN IMMEDIATE")
            try:
                verdicts = [self._one(db, takes, now) for takes in batch]
                if now - self._pruned_at > _PRUNE_SECONDS:
                    db.execute("DELETE FROM buckets WHERE expires < ?", (now,))
                    self._pruned_at = now
                db.execute("COMMIT")
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
        except sqlite3.Error:
            self._close()  # the next batch opens the file afresh
            raise
        return verdicts

    @staticmethod
    def _one(db: sqlite3.Connection, takes: Sequence[Take], now: float) -> Verdict:
        keys = [take.key for take in takes]
        marks = ",".join("?" * len(keys))
        stored = {
            key: (level, at)
            for key, level, at, until in db.execute(
                f"SELECT key, level, at, expires FROM buckets WHERE key IN ({marks})", keys
            )
            if until > now
        }
        verdict, states = settle(takes, [stored.get(key) for key in keys], now)
        rows = [(t.key, *s, expires(t, s)) for t, s in zip(takes, states, strict=False) if s is not None]
        if rows:
            db.executemany(_UPSERT, rows)
        return verdict

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _went_down(self, exc: BaseException) -> None:
        if not self._outage:
            self._outage = True
            logs.event(
                logs.APP,
                logging.WARNING,
                f"rate limit: {self.path} failed ({type(exc).__name__}: {exc}); failing open to this "
                "worker's in-memory limits until it works again",
            )

    def _came_back(self) -> None:
        if self._outage:
            self._outage = False
            logs.event(logs.APP, logging.INFO, f"rate limit: {self.path} works again; limits are shared again")
