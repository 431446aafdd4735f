"""PII hidden from the upstream model behind reversible placeholders (`security.pii_masking.before_model`).

Per request: each PII value in the messages sent upstream becomes `[<kind>_<n>]` (`[email_1]`,
`[cn_resident_id_2]`), the same value the same placeholder everywhere in the request; the model's
reply gets the real values back before the user sees it or the history stores it (the store then
masks it its own way). A placeholder the model never got (`[email_9]`) stays as it is. Numbers
already present in the user's own text are skipped, so a literal `[email_1]` is never "restored".

Streams: a placeholder may arrive split across chunks (`[ema`, `il_1]`), so a trailing `[...`
that could still become one is held back until it completes, at most `_MAX_HELD` characters.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

from ..models.adapters.base import Chunk, Message, Reply, UpstreamError, Usage, WrappedStream
from .pii import Masker

_PLACEHOLDER = re.compile(r"\[[a-z_]+_[0-9]+\]")
_PARTIAL = re.compile(r"\[[a-z_0-9]*\Z")  # what a placeholder looks like before its `]` arrives
_MAX_HELD = 32  # longer than any placeholder: `[cn_resident_id_` and 15 digits


class Placeholders:
    """One request's placeholders; truthy once `hide` has hidden something."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self.real: dict[str, str] = {}  # placeholder -> value
        self._named: dict[str, str] = {}  # value -> placeholder
        self._counts: dict[str, int] = {}
        self._typed = ""  # the request's own text: placeholders found in it are not handed out

    def __bool__(self) -> bool:
        return bool(self.real)

    def hide(self, messages: list[Message]) -> list[Message]:
        """`messages` with every PII value in their text replaced by its placeholder."""
        self._typed = "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
        return [
            {**m, "content": self.masker.replace(m["content"], self._name)} if isinstance(m.get("content"), str) else m
            for m in messages
        ]

    def restore(self, text: str) -> str:
        if not self.real or "[" not in text:
            return text
        return _PLACEHOLDER.sub(lambda match: self.real.get(match.group(), match.group()), text)

    def restored_reply(self, reply: Reply) -> Reply:
        """The reply with real values back in its text and in its tool calls' strings."""
        return replace(reply, text=self.restore(reply.text), tool_calls=self._restore_json(reply.tool_calls))

    def stream_restorer(self) -> StreamRestorer:
        return StreamRestorer(self.restore)

    def restoring(self, stream: Stream) -> RestoringStream:
        return RestoringStream(stream, self)

    def _name(self, kind: str, value: str) -> str:
        placeholder = self._named.get(value)
        if placeholder is None:
            number = self._counts.get(kind, 0) + 1
            while f"[{kind}_{number}]" in self._typed:
                number += 1
            self._counts[kind] = number
            placeholder = self._named[value] = f"[{kind}_{number}]"
            self.real[placeholder] = value
        return placeholder

    def _restore_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.restore(value)
        if isinstance(value, list):
            return [self._restore_json(item) for item in value]
        if isinstance(value, dict):
            return {key: self._restore_json(item) for key, item in value.items()}
        return value


class StreamRestorer:
    """Restores a reply that arrives in pieces: `feed` each delta, `flush` at the end."""

    def __init__(self, restore: Callable[[str], str]) -> None:
        self._restore = restore
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        start = text.rfind("[")
        if start != -1 and len(text) - start <= _MAX_HELD and _PARTIAL.match(text, start):
            self._held, text = text[start:], text[:start]
        else:
            self._held = ""
        return self._restore(text)

    def flush(self) -> str:
        """What is still held back: the stream ended inside something that was not a placeholder."""
        held, self._held = self._held, ""
        return held


class Stream(Protocol):
    """What pipeline.relay_deltas and the endpoints use of a ModelStream (or CompleteStream)."""

    model: str
    text: str
    usage: Usage
    finish_reason: str

    def __aiter__(self) -> AsyncIterator[list[Chunk]]: ...

    async def close(self, error: UpstreamError | None = None) -> None: ...


class RestoringStream(WrappedStream):
    """A model stream whose deltas and `text` carry the real values instead of the placeholders."""

    def __init__(self, stream: Stream, placeholders: Placeholders) -> None:
        super().__init__(stream)
        self._placeholders = placeholders

    @property
    def text(self) -> str:
        return self._placeholders.restore(self._stream.text)

    async def __aiter__(self) -> AsyncIterator[list[Chunk]]:
        restorer = self._placeholders.stream_restorer()
        async for chunks in self._stream:
            yield [replace(chunk, delta=restorer.feed(chunk.delta)) if chunk.delta else chunk for chunk in chunks]
        tail = restorer.flush()
        if tail:
            yield [Chunk(delta=tail)]


def hide_pii(masker: Masker | None, messages: list[Message]) -> tuple[list[Message], Placeholders | None]:
    """The messages to send upstream, and the placeholders to restore in the reply (None when
    `masker` is None, i.e. before_model is off, or when the messages hold no PII)."""
    if not masker:
        return messages, None
    placeholders = Placeholders(masker)
    hidden = placeholders.hide(messages)
    return (hidden, placeholders) if placeholders else (messages, None)
