"""The offline model: a deterministic function of the conversation, for demos and tests.

It never touches the network. The reply names itself so nobody mistakes it for a real model, echoes
the text of the user's last message, and streams word by word. Tokens are whitespace-separated words.
It has no tools: tools, tool calls, tool results and images in a request are ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..settings import ModelSettings
from .base import CallOptions, Chunk, Message, Reply, Usage, prompt_words, text_of


def builtin_answer(messages: list[Message]) -> str:
    last = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    turns = sum(1 for m in messages if m.get("role") == "user")
    text = " ".join(last.split()) or "(empty message)"
    return (
        f'You said: "{text}". I am the builtin offline model, so I can only echo you '
        f"(turn {turns}); configure an upstream model for real answers."
    )


class BuiltinAdapter:
    def __init__(self, settings: ModelSettings, secrets: dict[str, str], clients: object) -> None:
        self.name = settings.name
        self.max_tokens = settings.max_tokens

    def _answer(self, messages: list[Message], opts: CallOptions) -> list[str]:
        words = builtin_answer(messages).split()
        limit = opts.max_tokens or self.max_tokens
        return words[:limit] if limit else words

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        words = self._answer(messages, opts)
        return Reply(text=" ".join(words), usage=Usage(prompt_words(messages), len(words)))

    async def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        words = self._answer(messages, opts)
        chunks = [Chunk(delta=word if i == 0 else " " + word) for i, word in enumerate(words)]
        yield [*chunks, Chunk(usage=Usage(prompt_words(messages), len(words)), finish_reason="stop")]
