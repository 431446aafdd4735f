"""Model adapters. A custom adapter (`provider: custom`, engine/models/adapters/custom.py) imports what it
needs from here: `from assistantctl.engine.models.adapters import CallOptions, Chunk, Reply, Usage`.
Importing this package is cheap (it loads only base.py), so `assistantctl validate` stays fast."""

from .base import (
    CallOptions,
    Chunk,
    Message,
    Reply,
    UpstreamError,
    Usage,
    count_words,
    prompt_words,
    text_of,
    tool_call,
)

__all__ = [
    "CallOptions",
    "Chunk",
    "Message",
    "Reply",
    "UpstreamError",
    "Usage",
    "count_words",
    "prompt_words",
    "text_of",
    "tool_call",
]
