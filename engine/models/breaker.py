"""A per-model circuit breaker: closed → open after N consecutive failures → half-open after a
cooldown (one probe call) → closed on success, open again on failure."""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import metrics


class Breaker:
    def __init__(self, model: str, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.model = model
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        metrics.BREAKER_OPEN.labels(model).set(0)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def available(self) -> bool:
        """Whether a call may be tried now (closed, or half-open with no probe in flight)."""
        state = self.state
        return state == "closed" or (state == "half-open" and not self.probing)

    def begin(self) -> bool:
        """Claim the right to call; in half-open only one probe at a time gets it."""
        if not self.available():
            return False
        if self.state == "half-open":
            self.probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.probing = False
        if self.opened_at is not None:
            self.opened_at = None
            metrics.BREAKER_OPEN.labels(self.model).set(0)

    def failure(self) -> None:
        self.failures += 1
        was_probe, self.probing = self.probing, False
        if was_probe or self.failures >= self.threshold:
            self.opened_at = self.clock()
            metrics.BREAKER_OPEN.labels(self.model).set(1)

    def release(self) -> None:
        """The call ended without a verdict (cancelled): let another probe try."""
        self.probing = False
