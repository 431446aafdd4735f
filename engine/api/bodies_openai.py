"""The OpenAI parts of a /v1/chat/completions body, checked: messages (text, image parts, an
assistant's tool calls, tool results) and the request fields passed on to the model (tools,
tool_choice, parallel_tool_calls, response_format, top_p, stop, seed).

Checked values are kept as the client sent them, so an OpenAI-compatible upstream gets them
unchanged; the adapters translate them for other providers. Anything malformed is a 400.
"""

from __future__ import annotations

from typing import Any

from ..errors import ApiError
from ..models.adapters.base import Message

_ROLES = frozenset({"system", "user", "assistant", "tool"})


def integer(value: Any) -> int | None:
    """An integer as JSON Schema counts them (2.0 is one, true is not), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def text(value: Any, key: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{key} must be a string")
    if len(value) > max_chars:
        raise ApiError(413, "message_too_long", f"{key} is over {max_chars} characters")
    return value


def content(value: Any, max_chars: int) -> str | list[dict[str, Any]]:
    """A message's content: a string, or OpenAI's parts. Text-only parts are joined into a string
    (what skills and PII masking read); a list with an image stays a list, its parts as sent."""
    if isinstance(value, list):
        if not all(isinstance(p, dict) and p.get("type") in ("text", "image_url") for p in value):
            raise ApiError(400, "invalid_field", "content parts must be of type text or image_url")
        texts = [text(p.get("text"), "a text part's text", max_chars) for p in value if p["type"] == "text"]
        if len(texts) == len(value):
            value = "".join(texts)
        else:
            text("".join(texts), "content", max_chars)
            for part in value:
                image = part.get("image_url")
                if part["type"] == "image_url" and not (isinstance(image, dict) and isinstance(image.get("url"), str)):
                    raise ApiError(400, "invalid_field", "an image_url part needs image_url.url, a string")
            return value
    if value is None:
        value = ""
    return text(value, "content", max_chars)


def message(item: Any, max_chars: int) -> Message:
    """One checked message. Plain ones stay {"role", "content"}; OpenAI's tool fields are kept."""
    role = item.get("role") if isinstance(item, dict) else None
    if not isinstance(role, str) or role not in _ROLES:
        raise ApiError(400, "invalid_field", f"each message needs a role in {sorted(_ROLES)}")
    value = item.get("content")
    checked: Message = {"role": role, "content": content(value, max_chars)}
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ApiError(400, "invalid_field", "a tool message needs tool_call_id, a non-empty string")
        checked["tool_call_id"] = call_id
    elif role == "assistant" and item.get("tool_calls") is not None and _tool_calls(item["tool_calls"]):
        checked["tool_calls"] = item["tool_calls"]
        if value is None:
            checked["content"] = None  # OpenAI's own shape for a message that only calls tools
    if isinstance(item.get("name"), str):
        checked["name"] = item["name"]
    return checked


def _tool_calls(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ApiError(400, "invalid_field", "tool_calls must be a list")
    for call in value:
        function = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(function, dict)
            and isinstance(call.get("id"), str)
            and call["id"]
            and call.get("type", "function") == "function"
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and function["name"]
        ):
            raise ApiError(
                400, "invalid_field", "each tool call needs an id, type function and function.name (strings)"
            )
        if not isinstance(function.get("arguments"), str):
            raise ApiError(400, "invalid_field", "a tool call's function.arguments must be a string (JSON text)")
    return value


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ApiError(400, "invalid_field", "tools must be a list")
    for tool in value:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not (
            isinstance(function, dict)
            and tool.get("type") == "function"
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and function["name"]
            and isinstance(function.get("parameters", {}), dict)
            and isinstance(function.get("description", ""), str)
        ):
            raise ApiError(
                400,
                "invalid_field",
                "each tool needs type function and function.name (a string); parameters is an object",
            )
    return value


def _tool_choice(value: Any) -> str | dict[str, Any]:
    if value in ("none", "auto", "required"):
        return value
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(function, dict):
        if isinstance(function.get("name"), str) and function["name"]:
            return value
    raise ApiError(
        400,
        "invalid_field",
        'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name"}}',
    )


def _top_p(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return value
    raise ApiError(400, "invalid_field", "top_p must be a number from 0 to 1")


def _stop(value: Any) -> str | list[str]:
    if isinstance(value, str) or (
        isinstance(value, list) and 0 < len(value) <= 4 and all(isinstance(s, str) for s in value)
    ):
        return value
    raise ApiError(400, "invalid_field", "stop must be a string or a list of 1 to 4 strings")


def _seed(value: Any) -> int:
    seed = integer(value)
    if seed is None:
        raise ApiError(400, "invalid_field", "seed must be an integer")
    return seed


def _response_format(value: Any) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object") or (kind == "json_schema" and isinstance(value.get("json_schema"), dict)):
        return value
    raise ApiError(
        400, "invalid_field", 'response_format must be {"type": "text"}, {"type": "json_object"} or a json_schema one'
    )


def _parallel(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ApiError(400, "invalid_field", "parallel_tool_calls must be true or false")


# The OpenAI request fields passed on to the model (each adapter translates them), with their checks.
_EXTRA_FIELDS = {
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _parallel,
    "response_format": _response_format,
    "top_p": _top_p,
    "stop": _stop,
    "seed": _seed,
}


def extra_fields(data: dict[str, Any]) -> dict[str, Any] | None:
    extra = {key: check(data[key]) for key, check in _EXTRA_FIELDS.items() if data.get(key) is not None}
    return extra or None
