"""OpenAI's chat request and reply shapes translated to and from Ollama's /api/chat.

Request: an assistant message's `tool_calls` keep their shape but carry `arguments` as an object;
a tool message names its tool (`tool_name`, looked up by `tool_call_id` among the earlier calls);
image parts become the message's `images` (base64 only: Ollama does not fetch URLs); `tools` go as
they are (the same shape), dropped for `tool_choice: "none"`; `response_format` becomes `format`
("json" or the JSON schema); `top_p`, `stop` and `seed` go in `options`. Ollama has no forced tool
choice and no parallel_tool_calls switch: those are not sent. Reply: tool calls get an id
(`call_<hex>`, Ollama names none) and their arguments as JSON text.
"""

from __future__ import annotations

import os
from typing import Any

from ...jsonio import dumps
from .base import Message, UpstreamError, call_arguments, text_of, tool_call


def messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The messages as Ollama takes them; plain text messages are passed as they are."""
    if all(len(m) == 2 and isinstance(m["content"], str) for m in messages):
        return messages  # nearly every request
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], m["content"]
        message: dict[str, Any] = {"role": role, "content": text_of(content)}
        if role == "tool" and m["tool_call_id"] in names:
            message["tool_name"] = names[m["tool_call_id"]]
        if m.get("tool_calls"):
            message["tool_calls"] = [_call(call) for call in m["tool_calls"]]
            names.update((call["id"], call["function"]["name"]) for call in m["tool_calls"])
        if isinstance(content, list):
            images = [_image(p["image_url"]["url"]) for p in content if p["type"] == "image_url"]
            if images:
                message["images"] = images
        out.append(message)
    return out


def _call(call: dict[str, Any]) -> dict[str, Any]:
    return {"function": {"name": call["function"]["name"], "arguments": call_arguments(call, "Ollama")}}


def _image(url: str) -> str:
    head, _, data = url.partition(",")
    if not (head.startswith("data:") and head.endswith(";base64") and data):
        raise UpstreamError("Ollama takes images only as base64 data: URLs", retryable=False)
    return data


def request_fields(extra: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The /api/chat fields for the OpenAI request fields in `extra`; sampling knobs go in `options`."""
    fields: dict[str, Any] = {}
    if extra.get("tools") and extra.get("tool_choice") != "none":
        fields["tools"] = extra["tools"]
    response_format = extra.get("response_format")
    if response_format and response_format["type"] == "json_object":
        fields["format"] = "json"
    elif response_format and response_format["type"] == "json_schema":
        fields["format"] = response_format["json_schema"].get("schema") or "json"
    for key in ("top_p", "seed"):
        if key in extra:
            options[key] = extra[key]
    if "stop" in extra:
        options["stop"] = [extra["stop"]] if isinstance(extra["stop"], str) else extra["stop"]
    return fields


def tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A reply message's tool calls as OpenAI's."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else dumps(arguments or {}).decode()
        calls.append(tool_call(f"call_{os.urandom(12).hex()}", function.get("name", ""), text))
    return calls
