"""A reference client of the engine's websocket channel for mobile apps (see README.md here)."""

from .cache import Cache, Message
from .client import (
    Chunk,
    ClientRefused,
    Connected,
    Disconnected,
    Event,
    Failed,
    MobileClient,
    Other,
    Reply,
    ReplyFailed,
)

__all__ = [
    "Cache",
    "Chunk",
    "ClientRefused",
    "Connected",
    "Disconnected",
    "Event",
    "Failed",
    "Message",
    "MobileClient",
    "Other",
    "Reply",
    "ReplyFailed",
]
