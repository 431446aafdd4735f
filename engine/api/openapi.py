"""The OpenAPI 3.1 document of the REST routes, generated from the route table and pydantic models.

Every `Route` of the app needs an `Operation` here (or a place in `_UNDOCUMENTED`); a route
without one makes `document()` raise, so a new endpoint cannot go undocumented. Request bodies
are the models of `api/bodies.py`; response bodies are the models below. The document does not
depend on the settings (the websocket channel and /metrics are documented elsewhere), so the
committed copy, `engine/api/openapi.json`, equals what every engine serves at GET /openapi.json.

Regenerate the committed copy: `python -m assistantctl.engine.api.openapi > engine/api/openapi.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import channels, metrics
from ..security.auth import USER_PATTERN
from . import admin, chat, files, history, openai, page
from .bodies import ChatBody, CompletionBody, DefaultModelBody
from .openapi_events import ChatCompletionChunk, CompletionStreamError, StreamTool, ToolEvent, event_schema

API_VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an undocumented field fails the response tests


class ErrorDetail(_Reply):
    code: str
    message: str


class ErrorBody(_Reply):
    error: ErrorDetail


class Usage(_Reply):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ChatReply(_Reply):
    reply: str
    model: str
    conversation_id: str
    message_id: str
    usage: Usage
    tool_calls: list[dict[str, Any]]
    # With tools offered: why the model stopped (max_steps: it still wanted tools), the tool calls
    # the engine ran (their `finished`/`failed` events) and what send_message sent.
    finish_reason: str | None = None
    tools: list[ToolEvent] | None = None
    sent: list[str] | None = None


class StreamDelta(_Reply):
    delta: str


class StreamDone(_Reply):
    done: Literal[True]
    model: str
    conversation_id: str
    message_id: str
    finish_reason: str
    usage: Usage


class StreamError(_Reply):
    done: Literal[True]
    error: ErrorDetail


class HistoryMessage(_Reply):
    id: str
    conversation_id: str
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    model: str | None
    tokens: int
    created_at: float


class HistoryPage(_Reply):
    user: str
    messages: list[HistoryMessage]
    next_before: str | None


class ConversationSummary(_Reply):
    id: str
    created_at: float
    updated_at: float
    messages: int
    title: str  # the first user message's first 80 characters


class ConversationPage(_Reply):
    user: str
    conversations: list[ConversationSummary]
    next_before: str | None


class ConversationDeleted(_Reply):
    conversation_id: str
    deleted_messages: int


class UserHistoryDeleted(_Reply):
    user: str
    deleted_messages: int


class HistoryKeyStatus(_Reply):
    current: str | None
    keys: list[str]
    records: dict[str, int]
    plaintext: int
    unlabelled: int
    pending: int
    unknown_keys: list[str]


class Health(_Reply):
    status: Literal["ok"]
    uptime_seconds: float
    # Loopback peers only: the worker that answered, and the sha256 of the settings file it runs.
    pid: int | None = None
    settings_sha256: str | None = None
    secrets_sha256: str | None = None  # of the secrets file it loaded, when there is one
    # What every worker runs, as the engine's parent last said: {settings_sha256, secrets_sha256}.
    workers: dict[str, str | None] | None = None


class Ready(_Reply):
    ready: bool
    checks: dict[str, bool]
    default_model: str
    breakers: dict[str, str]


class CompletionUsage(_Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Reply):
    role: Literal["assistant"]
    content: str
    tool_calls: list[dict[str, Any]] | None = None


class CompletionChoice(_Reply):
    index: int
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(_Reply):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ModelInfo(_Reply):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    default: bool


class ModelList(_Reply):
    object: Literal["list"]
    data: list[ModelInfo]


class DefaultModelSwitched(_Reply):
    default_model: str
    previous: str


_ERRORS = {
    400: "Malformed request",
    401: "A Bearer token is required (JWT on)",
    403: "This user may not use the assistant",
    404: "Unknown model, conversation or file",
    413: "Body or message too large",
    429: "Rate limited; see Retry-After",
    502: "Every model failed",
    503: "Overloaded or no model available; see Retry-After",
    504: "The model did not answer in time",
}
# A `user` query parameter: auth's user pattern, or empty (`user=`), which means the caller, as absent does.
_QUERY_USER = {"type": "string", "pattern": f"^(?:{USER_PATTERN.strip('^$')})?$"}
_CHAT_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    ok: type[BaseModel] | None  # the 200 body (None: an event stream, described by `events`)
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # (name, description, schema)
    path: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # (name, description, schema) of the path's {parameters}
    events: tuple[type[BaseModel], ...] = ()  # the bodies of the server-sent events, when it streams
    stream_end: str | None = None  # a last event's `data` that is not JSON (OpenAI's [DONE])
    description: str = ""
    secured: bool = True
    also_ok: tuple[int, ...] = ()  # other statuses answered with the 200 body
    media: str | None = None  # a 200 body that is a file of this type, not JSON (ok is then None)

    def models(self) -> list[type[BaseModel]]:
        return [m for m in (self.ok, self.body, *self.events) if m is not None]

    def render(self, operation_id: str) -> dict[str, Any]:
        op: dict[str, Any] = {"operationId": operation_id, "summary": self.summary, "tags": [self.tag]}
        if self.description:
            op["description"] = self.description
        if self.query or self.path:
            op["parameters"] = [
                {"name": name, "in": "path", "required": True, "description": text, "schema": schema}
                for name, text, schema in self.path
            ] + [
                {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
                for name, text, schema in self.query
            ]
        if self.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(self.body)}}}
        op["responses"] = {str(status): self._ok() for status in (200, *self.also_ok)} | {
            str(status): {"description": _ERRORS[status], "content": {"application/json": {"schema": _ref(ErrorBody)}}}
            for status in self.errors
        }
        if self.secured:
            op["security"] = [{}, {"bearer": []}]  # a token only when the spec turns JWT on
        return op

    def _ok(self) -> dict[str, Any]:
        content: dict[str, Any] = {}
        if self.ok is not None:
            content["application/json"] = {"schema": _ref(self.ok)}
        if self.events:
            content["text/event-stream"] = {"schema": event_schema(self.events, self.stream_end)}
        if self.media:
            content[self.media] = {"schema": {"type": "string", "contentMediaType": self.media}}
        description = "OK"
        if self.events:
            description += "; server-sent events when it streams" if self.ok else ": server-sent events"
        return {"description": description, "content": content}


OPERATIONS: dict[Any, Operation] = {
    admin.health: Operation("Liveness", "operations", Health, secured=False),
    admin.ready: Operation(
        "Readiness: storage and models",
        "operations",
        Ready,
        secured=False,
        also_ok=(503,),
        description="503 with the same body when a check fails.",
    ),
    chat.chat: Operation("Chat; the turn is stored in the history", "chat", ChatReply, ChatBody, _CHAT_ERRORS),
    chat.chat_stream: Operation(
        "Chat, streamed as server-sent events",
        "chat",
        None,
        ChatBody,
        _CHAT_ERRORS,
        events=(StreamDelta, StreamTool, StreamDone, StreamError),
        description="`delta` events, `tool` events while the engine runs the model's tool calls, then one "
        "`done` event (or an `error` event when the model fails mid-reply).",
    ),
    chat.history: Operation(
        "The user's messages, newest first",
        "chat",
        HistoryPage,
        errors=(400, 401, 403, 429),
        query=(
            (
                "user",
                "Whose history: the caller's own; an admin may name anyone (telegram:123)",
                _QUERY_USER,
            ),
            ("conversation_id", "Only this conversation", {"type": "string"}),
            ("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
            ("before", "Cursor: the previous page's next_before", {"type": "string"}),
        ),
    ),
    history.list_conversations: Operation(
        "The user's conversations, newest first",
        "chat",
        ConversationPage,
        errors=(400, 401, 403, 429),
        query=(
            (
                "user",
                "Whose conversations: the caller's own; an admin may name anyone",
                _QUERY_USER,
            ),
            ("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
            ("before", "Cursor: the previous page's next_before", {"type": "string"}),
        ),
    ),
    history.delete_conversation: Operation(
        "Delete one of the caller's conversations",
        "chat",
        ConversationDeleted,
        errors=(401, 403, 404, 429),
        path=(("conversation_id", "The conversation", {"type": "string"}),),
        description="404 when the conversation does not exist or belongs to someone else.",
    ),
    history.delete_user_history: Operation(
        "Delete everything of one user: messages, conversations, client message ids",
        "chat",
        UserHistoryDeleted,
        errors=(400, 401, 403, 429),
        path=(("user", "The caller themself, or anyone for an admin", {"type": "string", "pattern": USER_PATTERN}),),
    ),
    files.screenshot: Operation(
        "Download one of the caller's screenshots",
        "files",
        None,
        errors=(401, 403, 404, 429),
        path=(("name", "The file's name, as the browser tool gave it", {"type": "string"}),),
        media="image/png",
        description="The PNG the browser tool saved in the caller's workspace (screenshots/<name>); "
        "only the caller's own.",
    ),
    history.history_keys: Operation(
        "History records per encryption key id, and how many the background rotation still re-seals",
        "admin",
        HistoryKeyStatus,
        errors=(401, 403),
        description="Open to callers on the host itself, or with the admin scope.",
    ),
    openai.chat_completions: Operation(
        "OpenAI-compatible chat completion (stream: true for server-sent chunks)",
        "openai",
        ChatCompletion,
        CompletionBody,
        _CHAT_ERRORS,
        events=(ChatCompletionChunk, CompletionStreamError),
        stream_end="[DONE]",
        description="With `stream: true`, server-sent chunks ending with `data: [DONE]` (not after an error).",
    ),
    openai.list_models: Operation("The declared models", "openai", ModelList, errors=(401, 403)),
    admin.set_default_model: Operation(
        "Switch the default model in every worker",
        "admin",
        DefaultModelSwitched,
        DefaultModelBody,
        (400, 403, 404),
        description="Open to callers on the host itself, or with a JWT whose `admin` claim is true.",
    ),
}


async def endpoint(request: Request) -> Response:
    request.app.state.runtime.auth.caller(request)  # the API's description is for its callers only
    return Response(text(request.app.routes), media_type="application/json")


# Routes documented elsewhere: /metrics is Prometheus' text format, this document itself, the
# chat platforms' webhooks (their paths come from the settings; their bodies are the platforms'),
# and the web chat page with its script and style sheet (HTML for browsers, not the API).
_UNDOCUMENTED = {metrics.metrics_endpoint, endpoint, channels.endpoint, page.index, page.asset}


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of `routes`; raises LookupError for a Route without an Operation."""
    paths: dict[str, dict[str, Any]] = {}
    used: list[type[BaseModel]] = [ErrorBody]
    for route in routes:
        if not isinstance(route, Route) or route.endpoint in _UNDOCUMENTED:
            continue
        op = OPERATIONS.get(route.endpoint)
        if op is None:
            raise LookupError(f"route {route.path} has no OpenAPI operation in engine/api/openapi.py")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = op.render(route.name)
        used += op.models()
    unique = list(dict.fromkeys(used))
    _, schemas = models_json_schema([(m, "validation") for m in unique], ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "assistantctl engine",
            "version": API_VERSION,
            "description": "The assistant's REST API. The websocket channel is described in docs/websocket.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


_text: str | None = None


def text(routes: list[BaseRoute]) -> str:
    """`document(routes)` as the committed file's text, computed once: every app's REST routes are
    the same (only the undocumented websocket and metrics routes depend on the settings)."""
    global _text
    if _text is None:
        _text = json.dumps(document(routes), indent=2, sort_keys=True) + "\n"
    return _text


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def main() -> None:
    from ..app import routes
    from . import openapi  # this module as the package sees it (not __main__), so endpoints match

    print(openapi.text(routes(None)), end="")


if __name__ == "__main__":
    main()
