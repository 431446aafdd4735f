"""Skill folders: `skills/<name>/{handler.py, config.yaml}`, shipped with the release.

Writing a skill (this part is a promise to skill authors):

    from pydantic import BaseModel
    from assistantctl.engine.skills import BaseSkill, SkillContext

    class Weather(BaseSkill):
        '''The weather for a city.'''
        class Config(BaseModel):        # optional: the skill's settings, from config.yaml's `config:`
            units: str = "metric"
        class Arguments(BaseModel):     # optional: what the model sends / the command's text fills
            city: str
        async def execute(self, context: SkillContext) -> str:
            return f"{context.arguments.city}: sunny ({self.config.units})"

handler.py defines exactly one subclass of `BaseSkill`. `execute` returns the text for the model (a
tool call) or the user (a command). It may raise, or run past config.yaml's `timeout_seconds`: the
caller then gets an error, never a crashed request (the engine log has the traceback).

What the engine does with a folder (`load_skill_folders`, once per worker at start):
- `tool: true`: the model is offered the tool `skill_<name>`, whose parameters are the Arguments'
  JSON Schema; its calls go through `call_tool` like every tool's (engine/tools/call.py).
- `command: /word`: a user message whose first word is `/word` runs the skill at once, no model
  call (engine/pipeline.py). The rest of the message fills the Arguments: when they have exactly
  one field and it is a string (the default `text`), or exactly one required field and it is a
  string, the rest (stripped) is that field; otherwise the rest is a JSON object of the arguments.
  Text that does not fit raises `CommandArgumentsError`, whose message says what was expected.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.util
import inspect
import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..settings import SkillFolderSettings, ToolsSettings

if TYPE_CHECKING:
    from ..tools.base import Tool, ToolContext

__all__ = ["BaseSkill", "SkillContext", "SkillLoadError", "load_handler"]

LOG = logging.getLogger("engine.skills")
TOOL_PREFIX = "skill_"
_UNSAFE = re.compile(r"\W")
Message = dict[str, Any]


class SkillLoadError(Exception):
    """A handler.py the engine cannot use: `path`, the line and column when one is to blame, and
    `reason`, one sentence; str() is `path[:line[:column]]: reason`."""

    def __init__(self, path: Path, reason: str, line: int | None = None, column: int | None = None) -> None:
        self.path, self.reason, self.line, self.column = path, reason, line, column
        where = ":".join(str(part) for part in (path, line, column) if part)
        super().__init__(f"{where}: {reason}")


class CommandArgumentsError(ValueError):
    """A command's text does not fit the skill's Arguments; the message says what it expects."""


@dataclass(frozen=True)
class SkillContext:
    """What one run of a skill gets besides its config."""

    arguments: Any  # the skill's Arguments, validated
    user: str
    channel: str  # "web", "websocket", or a channel's name ("telegram", ...)
    conversation: Sequence[Message]  # the messages so far, oldest first: {"role", "content"} dicts
    request_id: str


class BaseSkill(abc.ABC):
    """The base of a skill's class; see the module's docstring."""

    class Config(BaseModel):
        """No settings: config.yaml's `config:` must then be empty."""

        model_config = ConfigDict(extra="forbid")

    class Arguments(BaseModel):
        """One string: the model's `text`, or a command's whole text."""

        model_config = ConfigDict(extra="forbid")
        text: str = ""

    config: Any

    def __init__(self, config: BaseModel) -> None:
        self.config = config  # an instance of the class's Config

    @abc.abstractmethod
    async def execute(self, context: SkillContext) -> str:
        """The skill's answer for `context.arguments`."""


def load_handler(folder: Path) -> type[BaseSkill]:
    """The one BaseSkill subclass defined in `<folder>/handler.py`, imported as a module of its own
    (a unique name, nothing added to sys.path, no bytecode written into the folder). Raises
    SkillLoadError for a missing file, a syntax or import error, zero or several subclasses, or an
    `execute` that is not `async def`."""
    path = Path(folder) / "handler.py"
    try:
        source = path.read_bytes()
    except OSError:
        raise SkillLoadError(path, "the skill folder has no readable handler.py") from None
    name = f"assistant_skill_{_UNSAFE.sub('_', path.parent.name)}_{_digest(path)}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None, origin=str(path)))
    module.__file__ = str(path)
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise SkillLoadError(path, f"{exc.msg} (SyntaxError)", exc.lineno, exc.offset) from None
    sys.modules[name] = module  # pydantic and dataclasses look their module up there
    try:
        exec(code, module.__dict__)  # noqa: S102 - importing the handler is the point
        return _skill_class(module, path)
    except SkillLoadError:
        sys.modules.pop(name, None)
        raise
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.filename == str(path)), 0)
        text = " ".join(str(exc).split())
        raise SkillLoadError(path, f"cannot be imported: {type(exc).__name__}: {text}", line) from exc


def _digest(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


def _skill_class(module: Any, path: Path) -> type[BaseSkill]:
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseSkill) and value.__module__ == module.__name__
    ]
    if not found:
        raise SkillLoadError(path, "defines no subclass of BaseSkill (assistantctl.engine.skills.folders)")
    if len(found) > 1:
        names = ", ".join(cls.__name__ for cls in found)
        raise SkillLoadError(path, f"defines {len(found)} subclasses of BaseSkill ({names}), one is allowed")
    cls = found[0]
    if getattr(cls.execute, "__isabstractmethod__", False):
        raise SkillLoadError(path, f"{cls.__name__} does not define `async def execute(self, context)`")
    if not inspect.iscoroutinefunction(cls.execute):
        raise SkillLoadError(path, f"{cls.__name__}.execute is not async: declare `async def execute(self, context)`")
    for part in ("Config", "Arguments"):
        model = getattr(cls, part)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise SkillLoadError(path, f"{cls.__name__}.{part} must be a pydantic BaseModel subclass")
    return cls


@dataclass(frozen=True)
class LoadedSkill:
    """A folder's skill, ready: its settings, the instance with its config, and its tool."""

    settings: SkillFolderSettings
    skill: BaseSkill
    tool: Tool  # `skill_<name>`: offered to the model when settings.tool, and what a command runs

    @property
    def name(self) -> str:
        return self.settings.name


def load_skill(settings: SkillFolderSettings) -> LoadedSkill:
    """Import the folder's handler and fill its Config; raises ValueError naming the skill."""
    try:
        cls = load_handler(Path(settings.path))
        config = cls.Config.model_validate(settings.config)
    except SkillLoadError as exc:
        raise ValueError(f"skill '{settings.name}': {exc}") from None
    except ValidationError as exc:
        problem = f"its config does not fit {cls.__name__}.Config: {_explain(exc)}"
        raise ValueError(f"skill '{settings.name}': {problem}") from None
    skill = cls(config)
    return LoadedSkill(settings, skill, _tool(settings, skill))


def _tool(settings: SkillFolderSettings, skill: BaseSkill) -> Tool:
    from ..tools.base import Tool  # here, not at the top: the compiler imports this module to validate

    async def run(args: BaseModel, context: ToolContext) -> str:
        conversation = tuple(context.messages)
        text = await skill.execute(SkillContext(args, context.user, context.channel, conversation, context.request_id))
        if not isinstance(text, str):
            raise TypeError(f"execute() returned {type(text).__name__}, not str")
        return text

    # Risk "machine": a skill is Python code running inside the engine's worker with its rights (its
    # files, the secrets file, the network, processes); nothing confines it to "safe" or "network".
    return Tool(
        TOOL_PREFIX + settings.name,
        settings.description,
        type(skill).Arguments,
        run,
        risk="machine",
        timeout_seconds=settings.timeout_seconds,
    )


class SkillFolders:
    """The release's loaded skill folders: a ToolSource (engine/tools/registry.py) of the
    `skill_<name>` tools, and the commands."""

    def __init__(self, skills: Sequence[LoadedSkill]) -> None:
        self.skills = {skill.name: skill for skill in skills}
        self._tools = {skill.tool.name: skill.tool for skill in skills if skill.settings.tool}
        self._commands = {skill.settings.command: skill for skill in skills if skill.settings.command}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools

    def command(self, message: Any) -> tuple[LoadedSkill, str] | None:
        """The skill whose command is the first word of `message` and the rest of the message, or
        None (not a command, or not text)."""
        if not self._commands or not isinstance(message, str):
            return None
        words = message.split(maxsplit=1)
        skill = self._commands.get(words[0]) if words else None
        return (skill, words[1] if len(words) > 1 else "") if skill else None

    async def run_command(
        self,
        skill: LoadedSkill,
        rest: str,
        settings: ToolsSettings,
        context: ToolContext,
    ) -> tuple[str, str]:
        """(outcome, text) of a command: `rest` fills the Arguments (CommandArgumentsError when it
        cannot), then the skill runs through `call_tool` under its timeout and the output limit,
        counted and logged as the tool `skill_<name>`. outcome is a ToolResult outcome; when it
        is not "ok", text is a sentence for the user (the engine log has the details)."""
        from ..logs import event
        from ..tools.call import call_tool
        from ..tools.registry import Registry

        arguments = command_arguments(skill, rest)
        result = await call_tool(Registry([skill.tool], settings), skill.tool.name, json.dumps(arguments), context)
        level = logging.INFO if result.ok else logging.WARNING
        fields = {"request_id": context.request_id, "user": context.user, "channel": context.channel}
        event(LOG, level, f"command {skill.settings.command}", skill=skill.name, outcome=result.outcome, **fields)
        if result.ok:
            return "ok", result.content
        if result.outcome == "timeout":
            limit = min(skill.settings.timeout_seconds, settings.step_timeout_seconds)
            return "timeout", f"skill '{skill.name}' did not finish within {limit:g}s"
        if result.outcome == "too_large":
            return "too_large", f"skill '{skill.name}' answered more than tools.output_limit_bytes"
        return result.outcome, f"skill '{skill.name}' failed"


def load_skill_folders(settings: Sequence[SkillFolderSettings]) -> SkillFolders:
    """Every folder of the settings, loaded; raises ValueError naming a skill that cannot be (a bad
    handler, a config that does not fit, a command declared twice): a start-up error."""
    loaded = [load_skill(folder) for folder in settings]
    commands: dict[str, str] = {}
    for skill in loaded:
        command = skill.settings.command
        if command is not None and command in commands:
            raise ValueError(f"skills '{commands[command]}' and '{skill.name}' both declare the command {command}")
        if command is not None:
            commands[command] = skill.name
    return SkillFolders(loaded)


def command_arguments(skill: LoadedSkill, rest: str) -> dict[str, Any]:
    """The arguments a command's text `rest` gives the skill (see the module's docstring)."""
    model = type(skill.skill).Arguments
    command, field = skill.settings.command, _text_field(model)
    text = rest.strip()
    if field is not None:
        data: Any = {field: text} if text else {}
    else:
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CommandArgumentsError(f"{command} expects {_usage(model, command, None)}; that is not a JSON object")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise CommandArgumentsError(f"{command} expects {_usage(model, command, field)}; {_explain(exc)}") from None
    return data


def _text_field(model: type[BaseModel]) -> str | None:
    """The field a command's plain text fills, or None (then the text is a JSON object)."""
    fields = model.model_fields
    required = [name for name, info in fields.items() if info.is_required()]
    if len(fields) == 1:
        candidates = list(fields)
    else:
        candidates = required if len(required) == 1 else []
    return candidates[0] if candidates and fields[candidates[0]].annotation is str else None


def _usage(model: type[BaseModel], command: str | None, field: str | None) -> str:
    if field is not None:
        return f"`{command} <{field}>`"
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    parts = [
        f"{name} ({spec.get('type', 'any')}{', required' if name in required else ''})"
        for name, spec in schema.get("properties", {}).items()
    ]
    return f"a JSON object of its arguments: {', '.join(parts) or 'none'}"


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
