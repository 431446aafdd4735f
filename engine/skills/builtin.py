"""Skills shipped with the engine, named `builtin:<name>` in the spec.

Each entry is a factory called with the skill's `config` mapping; it returns an object with an
async `pre(messages)` and/or `post(text)`. Names here are part of the settings contract: the
compiler checks spec entrypoints against `settings.BUILTIN_SKILLS`, which must list these keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..models.adapters.base import Message


class SystemPrompt:
    """pre: put `config.text` first, as a system message, in every conversation sent to a model."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.text = str(config["text"])

    async def pre(self, messages: list[Message]) -> list[Message]:
        return [{"role": "system", "content": self.text}, *messages]


class ReplyLimit:
    """post: cut replies longer than `config.max_chars` characters, marking the cut with an ellipsis."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.max_chars = int(config["max_chars"])

    async def post(self, text: str) -> str:
        return text if len(text) <= self.max_chars else text[: self.max_chars - 1] + "…"


class Redact:
    """post: replace each of `config.words` (comma-separated, whole words, any case) by [redacted]."""

    def __init__(self, config: dict[str, Any]) -> None:
        words = [w.strip() for w in str(config["words"]).split(",") if w.strip()]
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)

    async def post(self, text: str) -> str:
        return self.pattern.sub("[redacted]", text)


BUILTINS: dict[str, Callable[[dict[str, Any]], object]] = {
    "system_prompt": SystemPrompt,
    "reply_limit": ReplyLimit,
    "redact": Redact,
}
