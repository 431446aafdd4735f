"""OpenAI's chat request and reply shapes translated to and from Anthropic's Messages API.

Request: system messages become the top-level `system`; an assistant message's `tool_calls` become
`tool_use` blocks (their JSON arguments parsed into `input`); tool messages become `tool_result`
blocks in one user turn; image parts become `image` blocks (base64 from a data: URL, else by URL);
`tools` get `input_schema`; `tool_choice` "auto"/"required"/"none"/a function becomes
auto/any/none/tool, and `parallel_tool_calls: false` its `disable_parallel_tool_use`; `top_p` stays,
`stop` becomes `stop_sequences`. `seed` and `response_format` have no Messages API counterpart and
are not sent. Reply: `tool_use` blocks become OpenAI tool calls, stop reasons OpenAI finish reasons.
"""

from __future__ import annotations

from typing import Any

from ...jsonio import dumps
from .base import Message, UpstreamError, call_arguments, text_of, tool_call

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
_TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", stop_reason or "stop")


def split_system(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt (Anthropic takes it as a top-level field) and the other messages, translated."""
    system = "\n\n".join(text_of(m["content"]) for m in messages if m.get("role") == "system")
    rest: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        content = m["content"]
        if role == "tool":
            result = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": text_of(content)}
            last = rest[-1] if rest else None
            if last and last["role"] == "user" and isinstance(last["content"], list) and _all_results(last):
                last["content"].append(result)  # a turn's results go back together, in one user message
            else:
                rest.append({"role": "user", "content": [result]})
        elif m.get("tool_calls"):
            text = text_of(content)
            blocks = [{"type": "text", "text": text}] if text else []
            blocks += [_tool_use(call) for call in m["tool_calls"]]
            rest.append({"role": role, "content": blocks})
        elif isinstance(content, list):
            rest.append({"role": role, "content": [_part(p) for p in content]})
        else:
            rest.append({"role": role, "content": content})
    return system, rest


def _all_results(message: dict[str, Any]) -> bool:
    return all(block.get("type") == "tool_result" for block in message["content"])


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call_arguments(call, "Anthropic")
    return {"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": arguments}


def _part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    url = part["image_url"]["url"]
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    head, _, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if encoding != "base64" or not data:
        raise UpstreamError("an image data: URL is not base64, which Anthropic needs", retryable=False)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def request_fields(extra: dict[str, Any]) -> dict[str, Any]:
    """The Messages API fields for the OpenAI request fields in `extra` (CallOptions.extra)."""
    fields: dict[str, Any] = {}
    if "top_p" in extra:
        fields["top_p"] = extra["top_p"]
    if "stop" in extra:
        stop = extra["stop"]
        fields["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    tools = extra.get("tools")
    if tools:
        fields["tools"] = [_tool(t["function"]) for t in tools]
        choice = _tool_choice(extra.get("tool_choice", "auto"))
        if extra.get("parallel_tool_calls") is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        fields["tool_choice"] = choice
    return fields


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": function["name"]}
    if "description" in function:
        tool["description"] = function["description"]
    tool["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return tool


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        return dict(_TOOL_CHOICES[choice])
    return {"type": "tool", "name": choice["function"]["name"]}


def tool_calls(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `tool_use` blocks of a reply as OpenAI tool calls."""
    return [
        tool_call(b.get("id", ""), b.get("name", ""), dumps(b.get("input") or {}).decode())
        for b in blocks
        if b.get("type") == "tool_use"
    ]
