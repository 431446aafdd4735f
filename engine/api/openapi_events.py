"""How engine/api/openapi.py documents server-sent events, and the OpenAI stream's event bodies.

An event stream's `schema` describes one event, as OpenAPI 3.2 (and schemathesis) read a
sequential media type: an object whose `data` is a string holding JSON (`contentMediaType`), the
JSON being one of the event models (`contentSchema`). The OpenAI stream ends with `data: [DONE]`,
which is not JSON: that one value is allowed beside them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

_REF = "#/components/schemas/{model}"


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an undocumented field fails the response tests


class ChunkDelta(_Event):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(_Event):
    index: int
    delta: ChunkDelta
    finish_reason: str | None


class ChunkUsage(_Event):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionChunk(_Event):
    """One piece of a streamed completion; the last one has no choices and the usage, when asked."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: ChunkUsage | None = None


class CompletionErrorDetail(_Event):
    message: str
    type: str
    code: int


class CompletionStreamError(_Event):
    """The model failed after the stream had started."""

    error: CompletionErrorDetail


class ToolEvent(_Event):
    """A tool call of the engine's own tool loop (engine/tools/loop.py) started, finished (outcome
    ok) or failed (an error the model was told about, never a failed request); or a text the
    send_message tool sent (`sent`, with `text`). `preview`: the first 200 characters of the
    result the model got. `approval`: a machine tool needed the user's approval
    (engine/tools/approval.py; tools.approval in the spec), `state` says how it went: `asked`
    (the question went out, `approval_id` names it), then `approved`, `declined` or `timeout`;
    `unavailable` where the channel cannot ask (this API and its stream: the call is refused, the
    model is told why), `failed` when the question could not be asked."""

    event: Literal["started", "finished", "failed", "sent", "approval"]
    call_id: str | None = None
    name: str | None = None
    outcome: Literal["ok", "error", "invalid_arguments", "timeout", "too_large", "denied", "unknown_tool"] | None = None
    duration_ms: float | None = None
    preview: str | None = None
    text: str | None = None
    state: Literal["asked", "approved", "declined", "timeout", "unavailable", "failed"] | None = None
    approval_id: str | None = None


class StreamTool(_Event):
    """Between the steps of a tool loop: one `tool` event per tool call start and end."""

    tool: ToolEvent


def event_schema(events: tuple[type[BaseModel], ...], last: str | None = None) -> dict[str, Any]:
    """The schema of one event whose `data` is the JSON of one of `events` (or exactly `last`)."""
    data: dict[str, Any] = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"oneOf": [{"$ref": _REF.format(model=m.__name__)} for m in events]},
    }
    if last is not None:  # `if` first: the JSON reading of `data` is only asked of the other events
        data = {"type": "string", "if": {"const": last}, "else": data}
    return {
        "type": "object",
        "description": "One server-sent event; its `data` line holds the JSON of one event model",
        "required": ["data"],
        "properties": {"data": data},
    }
