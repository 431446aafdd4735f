"""Which limits a request meets, and the refusal (429 + Retry-After) when one of them says no.

The limits, each a kind of bucket (limits/buckets.py) and the `limit` label of
`assistant_limit_refusals_total`:

- `rate_limit`: requests per minute per user (or per client IP: `rate_limit.key`), with a burst;
- `global`: requests per minute for the whole deployment, every user together;
- `model_requests`: a model's requests per minute, every user together (its upstream quota);
- `model_tokens`: a model's tokens per minute; a call is admitted while the bucket is not empty,
  and its real usage (input + output tokens) is charged after it, so the bucket may go into debt;
- `daily_tokens`: a user's tokens per UTC day, charged the same way; refused until the next day.

A request that calls a model meets all five, in one atomic step (`admit`): a refusal changes no
bucket, and its wait is the longest of the refusing limits'. The model limits are those of the
model the request asks for (or the channel's, or the default); a fallback model that answers is
charged its tokens. The buckets live where `storage.limiter` says: this worker (one worker), a
SQLite file the node's workers share, or Redis for every node. Limits come from the settings on
every call, so a reload applies at once and keeps the buckets' levels.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..errors import ApiError
from ..models.adapters.base import UpstreamError, WrappedStream
from ..settings import EngineSettings, ModelSettings
from .buckets import CHARGE, Buckets, Take, Verdict

if TYPE_CHECKING:
    from ..models.catalog import Catalog

LIMITS = ("rate_limit", "global", "model_requests", "model_tokens", "daily_tokens")
_DAY = 86_400
# Bucket keys other than a user's or an IP's start with '#', which neither may contain (webhook
# users start with their channel's name).
_GLOBAL_KEY = "#global"


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str
    wait: float
    model: str | None

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait))

    def error(self) -> ApiError:
        """The refusal as the API's 429, with Retry-After in whole seconds."""
        code, message = _MESSAGES[self.limit]
        return ApiError(429, code, message.format(model=self.model), {"Retry-After": str(self.retry_after)})


_MESSAGES = {
    "rate_limit": ("rate_limited", "too many requests, slow down"),
    "global": ("rate_limited", "the assistant is at its request limit, retry later"),
    "model_requests": ("rate_limited", "model {model!r} is at its requests_per_minute quota, retry later"),
    "model_tokens": ("rate_limited", "model {model!r} is at its tokens_per_minute quota, retry later"),
    "daily_tokens": ("budget_exhausted", "your daily token budget is spent; it renews at 00:00 UTC"),
}


class Limits:
    """The limits over one bucket store; `aclose` releases the store."""

    def __init__(self, buckets: Buckets) -> None:
        self.buckets = buckets

    async def admit(
        self, settings: EngineSettings, user: str, key: str, model: ModelSettings | None, route: str
    ) -> Refusal | None:
        """Take this request's tokens, or say which limit refuses it (counted in the metrics).
        `key` is the rate limit's key (the user or the client IP); `model` is the model the
        request will call, or None when it calls none (then only the request limits apply)."""
        verdict = await self.buckets.apply(admission(settings, user, key, model))
        if verdict.allowed:
            return None
        return refused(verdict, model.name if model else None, route)

    def meters(self, settings: EngineSettings) -> bool:
        """Whether calls must be charged their tokens afterwards (some token limit is set)."""
        return settings.daily_tokens_per_user is not None or any(m.tokens_per_minute for m in settings.models)

    async def charge(self, settings: EngineSettings, user: str, model: ModelSettings | None, tokens: int) -> None:
        """Charge a finished call's tokens to the model's and the user's token limits."""
        takes = charges(settings, user, model, tokens)
        if takes:
            await self.buckets.apply(takes)

    async def aclose(self) -> None:
        await self.buckets.aclose()


class MeteredStream(WrappedStream):
    """A model stream that charges its tokens to the token limits when it is closed (once, with
    the usage seen so far: a client that went away still pays for what the model produced)."""

    def __init__(self, limits: Limits, settings: EngineSettings, catalog: Catalog, user: str, stream: Any) -> None:
        super().__init__(stream)
        self._limits, self._settings, self._catalog, self._user = limits, settings, catalog, user
        self._charged = False

    async def close(self, error: UpstreamError | None = None) -> None:
        await self._stream.close(error)
        if not self._charged:
            self._charged = True
            entry = self._catalog.entries.get(self.model)
            usage = self._stream.usage
            tokens = usage.input_tokens + usage.output_tokens
            await self._limits.charge(self._settings, self._user, entry.settings if entry else None, tokens)


def refused(verdict: Verdict, model: str | None, route: str) -> Refusal:
    limit = verdict.limit or "rate_limit"
    metrics.child(metrics.LIMIT_REFUSALS, limit).inc()
    metrics.child(metrics.RATE_LIMITED, route).inc()
    return Refusal(limit, verdict.wait, model)


def admission(settings: EngineSettings, user: str, key: str, model: ModelSettings | None) -> list[Take]:
    rate = settings.rate_limit
    takes = [Take("rate_limit", key, rate.requests_per_minute / 60, rate.burst)]
    overall = settings.global_rate_limit
    if overall is not None:
        takes.append(Take("global", _GLOBAL_KEY, overall.requests_per_minute / 60, overall.burst))
    if model is None:
        return takes
    if model.requests_per_minute:
        # A quota is what the upstream allows per minute: at most a minute's worth at once.
        rpm = model.requests_per_minute
        takes.append(Take("model_requests", f"#model:{model.name}:requests", rpm / 60, rpm))
    if model.tokens_per_minute:
        takes.append(_model_tokens(model, cost=0, need=1))
    if settings.daily_tokens_per_user is not None:
        takes.append(_daily(settings.daily_tokens_per_user, user, cost=0, need=1))
    return takes


def charges(settings: EngineSettings, user: str, model: ModelSettings | None, tokens: int) -> list[Take]:
    if tokens <= 0:
        return []
    takes = []
    if model is not None and model.tokens_per_minute:
        takes.append(_model_tokens(model, cost=tokens, need=CHARGE))
    if settings.daily_tokens_per_user is not None:
        takes.append(_daily(settings.daily_tokens_per_user, user, cost=tokens, need=CHARGE))
    return takes


def _model_tokens(model: ModelSettings, cost: float, need: float) -> Take:
    tpm = model.tokens_per_minute or 0
    return Take("model_tokens", f"#model:{model.name}:tokens", tpm / 60, tpm, cost, need)


def _daily(budget: int, user: str, cost: float, need: float) -> Take:
    """The user's budget for today (UTC): a bucket that never refills, keyed by the day."""
    day, elapsed = divmod(time.time(), _DAY)
    return Take("daily_tokens", f"#day:{int(day)}:{user}", 0.0, budget, cost, need, _DAY - elapsed)
