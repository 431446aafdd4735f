"""Third-party-style skills the engine loads by `module:callable` in tests/engine/test_skills.py."""

from __future__ import annotations

import asyncio
from typing import Any


class Shout:
    """post: upper-cases replies (a plugin written outside the engine)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.suffix = str(config.get("suffix", ""))

    async def post(self, text: str) -> str:
        return text.upper() + self.suffix


class Stuck:
    """pre: never finishes in time."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.seconds = float(config.get("seconds", 60))

    async def pre(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        await asyncio.sleep(self.seconds)
        return messages


class Broken:
    """pre: raises, with a message that must not reach the client."""

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    async def pre(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        raise RuntimeError("internal detail: database password is hunter2")
