"""Request bodies: read with a size cap, decode, and check field by field into small dataclasses.

Anything malformed becomes a 4xx `ApiError` here, so handlers only see valid requests. The
pydantic models at the end describe the same bodies for the OpenAPI document (engine/api/openapi.py);
keep a field's parser and its model side by side when either changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect, Request

from ..errors import ApiError
from ..jsonio import RefusedJson, loads
from ..models.adapters.base import Message
from ..security.auth import USER_PATTERN
from .bodies_openai import extra_fields, integer, message, text

DEFAULT_PRIORITY = 5  # 0 (first) .. 9 (last) among requests waiting for the same model
_CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    message: str
    user: str | None
    conversation_id: str | None
    model: str | None
    priority: int


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    messages: list[Message]
    model: str | None
    stream: bool
    include_usage: bool
    user: str | None
    max_tokens: int | None
    temperature: float | None
    priority: int
    extra: dict[str, Any] | None = None  # tools, tool_choice, top_p ... (adapters.base.CallOptions.extra)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past `max_bytes`, 400 for anything `json_object` refuses,
    408 when the body stopped arriving (the connection's body timeout, engine/http_protocol.py)."""
    size = int(request.headers.get("content-length") or 0)
    if size > max_bytes:
        raise ApiError(413, "too_large", f"request body over {max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise ApiError(413, "too_large", f"request body over {max_bytes} bytes")
    except ClientDisconnect:  # the client left, or the protocol answered 408 and hung up: nobody reads this
        raise ApiError(408, "body_timeout", "the request body did not arrive in time") from None
    return json_object(body)


def json_object(raw: bytes | bytearray) -> dict[str, Any]:
    """`raw` decoded as a JSON object; any other input raises a 400 `ApiError`, never anything
    else: invalid JSON, nesting past jsonio.MAX_DEPTH, text with a lone surrogate, a non-object."""
    try:
        data = loads(raw)
    except RefusedJson as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    except ValueError:  # UnicodeDecodeError is one
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return data


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid_field", f"{key} must be a non-empty string")
    return value


def _priority(data: dict[str, Any]) -> int:
    value = integer(data.get("priority", DEFAULT_PRIORITY))
    if value is None or not 0 <= value <= 9:
        raise ApiError(400, "invalid_field", "priority must be an integer from 0 (first) to 9")
    return value


def chat_request(data: dict[str, Any], max_chars: int) -> ChatRequest:
    if "message" not in data:
        raise ApiError(400, "missing_field", "message is required")
    message = text(data["message"], "message", max_chars)
    if not message.strip():
        raise ApiError(400, "invalid_field", "message must not be empty")
    conversation_id = _optional_str(data, "conversation_id")
    if conversation_id is not None and not _CONVERSATION_ID.match(conversation_id):
        raise ApiError(400, "invalid_field", "conversation_id must be 1-64 letters, digits, _ or -")
    return ChatRequest(
        message=message,
        user=_optional_str(data, "user"),
        conversation_id=conversation_id,
        model=_optional_str(data, "model"),
        priority=_priority(data),
    )


def _positive_int(data: dict[str, Any], key: str) -> int | None:
    if data.get(key) is None:
        return None
    value = integer(data[key])
    if value is None or value < 1:
        raise ApiError(400, "invalid_field", f"{key} must be a positive integer")
    return value


def _flag(data: dict[str, Any], key: str, nullable: bool = False) -> bool:
    if key not in data or (nullable and data[key] is None):
        return False
    if not isinstance(data[key], bool):
        raise ApiError(400, "invalid_field", f"{key} must be true or false")
    return data[key]


def completion_request(data: dict[str, Any], max_chars: int) -> CompletionRequest:
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "invalid_field", "messages must be a non-empty list")
    messages = [message(item, max_chars) for item in raw]
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "invalid_field", "stream_options must be an object")
    max_tokens, max_completion_tokens = _positive_int(data, "max_tokens"), _positive_int(data, "max_completion_tokens")
    temperature = data.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2
    ):
        raise ApiError(400, "invalid_field", "temperature must be a number from 0 to 2")
    return CompletionRequest(
        messages=messages,
        model=_optional_str(data, "model"),
        stream=_flag(data, "stream", nullable=True),  # OpenAI's API takes null for false
        include_usage=_flag(options or {}, "include_usage"),
        user=_optional_str(data, "user"),
        max_tokens=max_tokens if max_tokens is not None else max_completion_tokens,
        temperature=float(temperature) if temperature is not None else None,
        priority=_priority(data),
        extra=extra_fields(data),
    )


# --- the documented shapes (OpenAPI) -----------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown fields are ignored, as by the parsers


class ChatBody(_Body):
    """POST /api/v1/chat and /api/v1/chat/stream."""

    message: str = Field(pattern=r"\S", description="The user's message; not blank, at most max_message_chars.")
    user: str | None = Field(
        None, pattern=USER_PATTERN, description="Who is asking: only ever the caller (telegram:12345, say)."
    )
    conversation_id: str | None = Field(
        None, pattern=_CONVERSATION_ID.pattern, description="Continue this conversation; a new one when absent."
    )
    model: str | None = Field(None, min_length=1, description="A declared model; the default when absent.")
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=9, description="0 is served first among waiting requests.")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageUrl(_Body):
    url: str = Field(description="An https: URL or a data: URL (base64); Ollama takes only the latter.")


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: ImageUrl


Content = str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]] | None


class Function(_Body):
    name: str = Field(min_length=1)
    arguments: str = Field(description="The arguments as JSON text.")


class ToolCall(_Body):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: Function


class SystemMessage(_Body):
    role: Literal["system"]
    content: Content = None


class UserMessage(_Body):
    role: Literal["user"]
    content: Content = None


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: Content = None
    tool_calls: list[ToolCall] | None = None


class ToolMessage(_Body):
    role: Literal["tool"]
    content: Content = None
    tool_call_id: str = Field(min_length=1, description="The id of the tool call this answers.")


CompletionMessage = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(_Body):
    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict, description="The arguments' JSON Schema.")


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Body):
    name: str = Field(min_length=1)


class ToolChoiceFunction(_Body):
    type: Literal["function"]
    function: FunctionName


class TextFormat(_Body):
    type: Literal["text", "json_object"]


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: dict[str, Any]


class StreamOptions(_Body):
    include_usage: bool = False


class CompletionBody(_Body):
    """POST /v1/chat/completions (the OpenAI shape; nothing is stored)."""

    messages: list[CompletionMessage] = Field(min_length=1)
    model: str | None = Field(None, min_length=1, description='A declared model; absent or "default": the default.')
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, pattern=USER_PATTERN, description="Only ever the caller.")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=9)
    # Passed on to the model (translated for Anthropic and Ollama; see engine/adapters).
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    response_format: TextFormat | JsonSchemaFormat | None = None
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    seed: int | None = None


class DefaultModelBody(_Body):
    """PUT /admin/v1/default-model."""

    model: str = Field(min_length=1)
