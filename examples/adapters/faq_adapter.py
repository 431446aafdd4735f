"""A custom model adapter: answers questions from a fixed FAQ, and hands everything else on.

Named in assistant.yaml as `class: faq_adapter:FaqAdapter` (see assistant.yaml beside this file).
`assistantctl validate` imports it from the spec's folder, and since it sits there, `apply` ships it
to every engine host with the release, where the engine imports it from.

The interface, as for every custom adapter:
- the class is built as `FaqAdapter(params)`; with a `Params` pydantic model, `params` is checked
  against it at `validate` time and the constructor gets the model's instance;
- `async def chat(messages, opts) -> Reply`;
- `async def stream(messages, opts)`, an async generator yielding lists of `Chunk`, the last one
  carrying usage and the finish reason;
- `UpstreamError(retryable=False)` says "not me": the engine goes on to the fallback models. Any
  other exception counts the same way; a timeout (the model's read_timeout_seconds) is retried.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

from assistantctl.engine.models.adapters import CallOptions, Chunk, Message, Reply, UpstreamError, Usage, text_of


class Params(BaseModel):
    answers: dict[str, str] = Field(min_length=1, description="Question (its words) -> the answer.")
    min_overlap: float = Field(0.6, gt=0, le=1, description="Share of a question's words a message must have.")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


class FaqAdapter:
    Params = Params

    def __init__(self, params: Params) -> None:
        self.params = params
        self.questions = [(_words(question), answer) for question, answer in params.answers.items()]

    def _answer(self, messages: list[Message]) -> str:
        asked = _words(next((text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), ""))
        best, score = None, 0.0
        for words, answer in self.questions:
            overlap = len(words & asked) / len(words)
            if overlap > score:
                best, score = answer, overlap
        if best is None or score < self.params.min_overlap:
            raise UpstreamError("no FAQ entry matches", retryable=False)
        return best

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        answer = self._answer(messages)
        return Reply(text=answer, usage=Usage(0, len(answer.split())))

    async def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        answer = self._answer(messages)  # before the first chunk: a miss still falls back
        words = answer.split()
        yield [Chunk(delta=word if i == 0 else " " + word) for i, word in enumerate(words)]
        yield [Chunk(usage=Usage(0, len(words)), finish_reason="stop")]
