"""`limits:` rate limits, budgets, timeouts and concurrency."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..types import PositiveSeconds
from .base import Strict


class RateLimit(Strict):
    requests_per_minute: int = Field(60, ge=1, description="Requests each key may make per minute, sustained.")
    burst: int = Field(20, ge=1, description="Requests a key may make at once above the per-minute rate.")
    key: Literal["user", "ip"] = Field(
        "user", description="What is counted: the authenticated user, or the client's IP address."
    )


class Timeouts(Strict):
    connect_seconds: PositiveSeconds = Field(5, description="Seconds nginx waits to connect to the engine.")
    read_seconds: PositiveSeconds = Field(
        60, description="Seconds nginx waits between two writes of a request to the engine before it gives up."
    )
    request_seconds: PositiveSeconds = Field(
        120,
        description="Seconds a whole request may take in the engine; also how long a stopping engine lets "
        "requests in flight finish.",
    )
    header_seconds: PositiveSeconds = Field(
        10,
        description="A request's headers must arrive within this long, or the engine answers 408 and closes the "
        "connection (a client sending half a request, or nothing, no longer holds it).",
    )
    body_seconds: PositiveSeconds = Field(
        30,
        description="A request's body must arrive within this long after its headers, or the engine answers 408 "
        "(a body shorter than its Content-Length no longer hangs).",
    )


class Concurrency(Strict):
    workers: int = Field(2, ge=1, le=64, description="Engine worker processes per node.")
    max_in_flight: int = Field(256, ge=1, description="Concurrent requests per worker before queueing.")
    queue_size: int = Field(
        1024,
        ge=0,
        description="Calls that may wait, per model and worker, for one of the model's max_concurrency slots; past "
        "it a call skips to the next fallback model. 0: no waiting.",
    )


class GlobalRateLimit(Strict):
    requests_per_minute: int = Field(ge=1, description="Requests per minute for the whole deployment.")
    burst: int = Field(ge=1, description="Requests admitted at once before the per-minute rate applies.")


class Limits(Strict):
    rate_limit: RateLimit = Field(
        RateLimit(),
        description="Requests per minute per user (or client IP), exact across every worker and, with "
        "deploy.state.rate_limits: redis, every node.",
    )
    global_rate_limit: GlobalRateLimit | None = Field(
        None, description="Requests per minute for the whole deployment, every user together; unset: none."
    )
    daily_tokens_per_user: int | None = Field(
        None,
        ge=1,
        description="Tokens (input + output) each user may spend per UTC day; past it 429 with Retry-After "
        "until 00:00 UTC. Unset: no budget.",
    )
    timeouts: Timeouts = Field(Timeouts(), description="How long each stage of a request may take.")
    concurrency: Concurrency = Field(Concurrency(), description="Worker processes and requests in flight.")
    max_message_chars: int = Field(16_000, ge=1, description="Longest user message in characters; longer ones get 413.")
    max_body_kilobytes: int = Field(
        256, ge=1, le=1_048_576, description="Largest request body nginx accepts, in KiB; larger ones get 413."
    )
