"""What a tool is, what it may use, and what it gives back.

A tool is a `Tool`: a name, a description and a pydantic argument model (its JSON Schema is what
the model sees; `json_arguments(schema)` makes one from a raw JSON Schema), an async
`run(args, context)` and a risk class. `run` returns text, or a `ToolOutput` to mark text that
came from the network (`tainted`), and raises `ToolError` with a sentence for the model when it
cannot do what was asked. Anything else it raises, a hang, an
oversized answer or bad arguments are turned into a tool error by `call_tool` (engine/tools/call.py).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from ..settings import ToolsSettings

if TYPE_CHECKING:
    import jsonschema

Risk = Literal["safe", "network", "machine"]
Message = dict[str, Any]  # OpenAI's chat shape, as engine/models/adapters/base.py
Outcome = Literal["ok", "error", "invalid_arguments", "timeout", "too_large", "denied", "unknown_tool"]


class ToolError(Exception):
    """Raised by a tool with a message meant for the model ("no such timezone 'Mars/Base'");
    `tainted` when the message is text from elsewhere (an MCP server's error, say)."""

    def __init__(self, message: str, *, tainted: bool = False) -> None:
        super().__init__(message)
        self.tainted = tainted


class Arguments(BaseModel):
    """The base of every tool's argument model: unknown arguments are errors the model can read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class JsonArguments(BaseModel):
    """Arguments declared by a raw JSON Schema instead of fields (a tool from an MCP server): make
    a subclass with `json_arguments(schema)`; the model sees `schema` and the tool gets the object
    the model sent, checked against it, as `args.values`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    json_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return copy.deepcopy(cls.json_schema)

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def json_arguments(schema: dict[str, Any], name: str = "JsonArguments") -> type[JsonArguments]:
    """A `JsonArguments` class for `schema`; arguments that do not fit it fail validation (call_tool
    then answers "invalid arguments" without running the tool). Raises SchemaError for a bad schema."""
    import jsonschema  # here: only MCP servers' tools have JSON Schemas of their own (~2 MB a worker)

    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    def check(cls: type[JsonArguments], data: Any) -> Any:
        problems = sorted(validator.iter_errors(data), key=lambda error: list(error.absolute_path))
        if problems:
            raise ValueError("; ".join(_where(error) + error.message for error in problems[:5]))
        return data

    return type(
        name,
        (JsonArguments,),
        {"json_schema": schema, "check": model_validator(mode="before")(check)},
    )


def _where(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    return f"{path}: " if path else ""


class ToolContext(Protocol):
    """What the tool-calling loop gives a tool for one call."""

    user: str
    channel: str
    request_id: str
    messages: Sequence[Message]  # the conversation so far, oldest first
    data_dir: Path  # the engine's data_dir: tools keep their files under data_dir/tools/
    settings: ToolsSettings
    complete: Callable[[list[Message]], Awaitable[str]]  # one call of the configured model
    send: Callable[[str], Awaitable[None]]  # a message to the user, through the request's channel


@dataclass(frozen=True)
class Context:
    """A plain `ToolContext`, for the loop and for tests."""

    user: str
    channel: str
    request_id: str
    messages: Sequence[Message]
    data_dir: Path
    settings: ToolsSettings
    complete: Callable[[list[Message]], Awaitable[str]]
    send: Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ToolOutput:
    text: str
    tainted: bool = False  # the text came from the network: a later policy may ask before risky tools


Run = Callable[[Any, ToolContext], Awaitable["str | ToolOutput"]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[Arguments] | type[JsonArguments]
    run: Run
    risk: Risk = "safe"
    # A limit of the tool's own (a skill folder's timeout_seconds); call_tool takes the smaller of
    # this and tools.step_timeout_seconds.
    timeout_seconds: float | None = None

    def definition(self) -> dict[str, Any]:
        """The tool as OpenAI's `tools` list declares it."""
        schema = self.args.model_json_schema()
        schema.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }


@dataclass(frozen=True)
class ToolResult:
    """One call's result: `content` is what goes back to the model, an error sentence when not ok."""

    tool: str
    outcome: Outcome
    content: str
    tainted: bool = False
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"
