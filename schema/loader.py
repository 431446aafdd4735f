"""Load assistant.yaml into a validated `Spec`, with errors that point at file:line:column."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .adapter_modules import attach_adapter_modules
from .checks import cross_check
from .located_yaml import SpecError, SpecProblem, locate, read_yaml
from .skill_folders import attach_skill_folders
from .spec import Spec
from .versions import CURRENT_VERSION, Location, UnknownVersion, Upgrade, moved_since, upgrade

Note = Callable[[str], None]

__all__ = ["SpecError", "SpecProblem", "load_spec", "parse_spec"]


def load_spec(path: str | Path, on_note: Note | None = None) -> Spec:
    """Read, validate and cross-check a spec file; raise `SpecError` on any problem.

    A file written for an older spec version is migrated in memory first, and `on_note` (when
    given) gets one line saying so; errors still point at the file as written."""
    path = Path(path)
    return parse_spec(path.read_text(encoding="utf-8"), str(path), on_note)


def parse_spec(text: str, filename: str = "assistant.yaml", on_note: Note | None = None) -> Spec:
    data, positions, problems = read_yaml(text, filename, "start from the default assistant.yaml")
    migrated = _upgrade(data, filename, positions, problems)
    if migrated.steps and on_note is not None:
        on_note(_migration_note(filename, migrated, has_version=("version",) in positions))
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(err, positions, migrated) for err in exc.errors()]
        raise SpecError(filename, problems) from None
    for loc, message, hint in cross_check(spec, Path(filename).resolve().parent):
        problems.append(SpecProblem(*locate(migrated.file_location(loc), positions), message, hint))
    if problems:
        raise SpecError(filename, problems)
    spec_dir = Path(filename).resolve().parent
    if spec.tools.skill_folders:
        spec = attach_skill_folders(spec, spec_dir, filename, positions)
    return attach_adapter_modules(spec, spec_dir, filename, positions)


def _upgrade(data: object, filename: str, positions: dict, problems: list[SpecProblem]) -> Upgrade:
    """Migrate an older file's data in place to the current version (see `schema.versions`); raises
    `SpecError`, with the problems found so far, for a version this code cannot read."""
    if not isinstance(data, dict):  # not a mapping: the validation says so
        return Upgrade(written=CURRENT_VERSION)
    try:
        return upgrade(data)
    except UnknownVersion as exc:  # its other keys may mean anything: nothing more to check
        problems.append(SpecProblem(*locate(("version",), positions), f"version: {exc}", exc.hint))
        raise SpecError(filename, problems) from None


def _migration_note(filename: str, migrated: Upgrade, has_version: bool) -> str:
    written = f"version {migrated.written}" + ("" if has_version else " (it has no `version:` key)")
    changes = "; ".join(step.change for step in migrated.steps)
    return (
        f"{filename} is written for spec {written}; it was read as version {CURRENT_VERSION} ({changes}). "
        f"`assistantctl -f {filename} migrate --write` rewrites it"
    )


def _problem(err: dict, positions: dict[Location, tuple[int, int]], migrated: Upgrade) -> SpecProblem:
    loc = tuple(part for part in err["loc"] if not _is_union_tag(part))
    where = migrated.file_location(loc)  # `loc` walks the current models, `where` the file as written
    dotted = ".".join(str(p) for p in where) or "(top level)"
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        line, col = positions.get((*where[:-1], key, "__key__"), locate(where, positions))
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else (f"known keys: {', '.join(known)}" if known else None)
        return SpecProblem(line, col, f"unknown key '{dotted}'", moved_since(where) or hint)
    if err["type"] == "missing":
        line, col = locate(where, positions)
        return SpecProblem(line, col, f"'{dotted}' is required")
    line, col = locate(where, positions)
    message = err["msg"].removeprefix("Value error, ")
    hint = _choice_hint(err["input"], _choices(loc)) if err["type"] == "literal_error" else None
    return SpecProblem(line, col, f"{dotted}: {message}", hint)


def _choice_hint(value: object, choices: list[str]) -> str | None:
    if not choices:
        return None
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"one of: {', '.join(choices)}"


def _is_union_tag(part: str | int) -> bool:
    # pydantic adds the union member's type name to a location, e.g. 'function-after[...]'.
    return isinstance(part, str) and ("[" in part or part in {"IPv4Network", "IPv6Network"})


def _known_keys(loc: Location) -> list[str]:
    """Field names allowed at `loc`, found by walking the Spec model along the path."""
    model = _model_in(_annotation_at(loc))
    return sorted(_fields_by_key(model)) if model else []


def _choices(loc: Location) -> list[str]:
    """The values a Literal allows at `loc` (in declaration order), or [] when it is no Literal."""
    choices: list[str] = []
    for member in _members(_annotation_at(loc)):
        if typing.get_origin(member) is typing.Literal:
            choices += [str(arg) for arg in typing.get_args(member)]
    return choices


def _annotation_at(loc: Location) -> object | None:
    current: object | None = Spec
    for part in loc:
        current = _step(current, part) if current is not None else None
    return current


def _step(annotation: object, part: str | int) -> object | None:
    model = _model_in(annotation)
    if model is not None:
        field = _fields_by_key(model).get(str(part))
        return field.annotation if field else None
    for member in _members(annotation):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin is list and args:
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def _fields_by_key(model: type[BaseModel]) -> dict:
    """A model's fields by the key the file uses for them (`class` for `class_path`)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _members(annotation: object) -> list[object]:
    """The alternatives of an optional or union annotation (the annotation itself otherwise),
    with `Annotated[...]` metadata stripped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _model_in(annotation: object) -> type[BaseModel] | None:
    # Only a model itself or a union with one: a model inside list[...] or dict[...] is one step further.
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None
