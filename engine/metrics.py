"""The engine's Prometheus metrics: exactly the names in docs/architecture.md.

With several uvicorn workers each worker is a process of its own, so `__main__` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before any worker imports this module; the
`/metrics` endpoint then aggregates every live worker's values. One worker uses the default registry.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Only the contract's names: no extra `*_created` series next to every counter and histogram.
disable_created_metrics()
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

HTTP_REQUESTS = Counter("assistant_http_requests_total", "HTTP requests answered.", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "assistant_http_request_duration_seconds", "HTTP request latency.", ["route"], buckets=_HTTP_BUCKETS
)
MODEL_CALLS = Counter("assistant_model_calls_total", "Model calls by outcome.", ["model", "outcome"])
MODEL_DURATION = Histogram(
    "assistant_model_call_duration_seconds", "Model call latency.", ["model"], buckets=_MODEL_BUCKETS
)
MODEL_TOKENS = Counter("assistant_model_tokens_total", "Tokens in and out.", ["model", "direction"])
TIME_TO_FIRST_TOKEN = Histogram(
    "assistant_time_to_first_token_seconds",
    "Streaming latency to the first chunk.",
    ["model"],
    buckets=_MODEL_BUCKETS,
)
BREAKER_OPEN = Gauge(
    "assistant_model_breaker_open",
    "1 while the model's circuit breaker is open.",
    ["model"],
    multiprocess_mode="livemax",
)
QUEUE_DEPTH = Gauge("assistant_queue_depth", "Requests waiting for a model slot.", multiprocess_mode="livesum")
WEBSOCKET_CONNECTIONS = Gauge(
    "assistant_websocket_connections", "Open websocket connections.", multiprocess_mode="livesum"
)
RATE_LIMITED = Counter("assistant_rate_limited_total", "Requests refused by any limit, by route.", ["route"])
LIMIT_REFUSALS = Counter(
    "assistant_limit_refusals_total",
    "Requests refused, by the limit that refused them (engine/limits/policy.py LIMITS).",
    ["limit"],
)


_children: dict[tuple[object, ...], Any] = {}
_MAX_CHILDREN = 10_000  # label values can come from clients (an HTTP method): never cache without bound


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, cached: the request path asks for the same few series thousands of
    times a second, and `labels()` takes a lock and re-validates the values on every call."""
    key = (metric, *values)
    found = _children.get(key)
    if found is None:
        found = metric.labels(*values)
        if len(_children) < _MAX_CHILDREN:
            _children[key] = found
    return found


def record_tokens(model: str, input_tokens: int, output_tokens: int) -> None:
    child(MODEL_TOKENS, model, "input").inc(input_tokens)
    child(MODEL_TOKENS, model, "output").inc(output_tokens)


def exposition() -> bytes:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics_endpoint(request: Request) -> Response:
    if not request.app.state.runtime.auth.may_read_metrics(request):
        from .errors import ApiError

        raise ApiError(403, "forbidden", "metrics are for the monitoring networks and admins")
    # Multiprocess collection reads every worker's files: keep that off the event loop.
    body = await asyncio.to_thread(exposition) if os.environ.get(MULTIPROC_ENV) else exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def forget_this_process() -> None:
    """On worker shutdown: drop this process's live gauges from the multiprocess aggregate."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
