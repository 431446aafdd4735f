"""Load assistant.yaml into a validated `Spec`, with errors that point at file:line:column."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .checks import cross_check
from .spec import Spec

Location = tuple[str | int, ...]


@dataclass(frozen=True)
class SpecProblem:
    line: int
    column: int
    message: str
    hint: str | None = None


class SpecError(Exception):
    """One or more problems in a spec file, each with its position."""

    def __init__(self, path: str, problems: list[SpecProblem]):
        self.path = path
        self.problems = sorted(problems, key=lambda p: (p.line, p.column))
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for p in self.problems:
            hint = f" (hint: {p.hint})" if p.hint else ""
            lines.append(f"{self.path}:{p.line}:{p.column}: {p.message}{hint}")
        return "\n".join(lines)


def load_spec(path: str | Path) -> Spec:
    """Read, validate and cross-check a spec file; raise `SpecError` on any problem."""
    path = Path(path)
    return parse_spec(path.read_text(encoding="utf-8"), str(path))


def parse_spec(text: str, filename: str = "assistant.yaml") -> Spec:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(filename, [SpecProblem(line, col, f"invalid YAML: {problem}")]) from None
    if node is None:
        raise SpecError(filename, [SpecProblem(1, 1, "the file is empty", "start from the default assistant.yaml")])
    positions: dict[Location, tuple[int, int]] = {}
    _record_positions(node, (), positions)
    data = _construct(node)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(filename, [_problem(err, positions) for err in exc.errors()]) from None
    problems = [SpecProblem(*_position(loc, positions), message, hint) for loc, message, hint in cross_check(spec)]
    if problems:
        raise SpecError(filename, problems)
    return spec


def _record_positions(node: yaml.Node, loc: Location, positions: dict[Location, tuple[int, int]]) -> None:
    """Remember where every key and value of the YAML node tree starts (1-based line, column)."""
    positions.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            positions[(*loc, key, "__key__")] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _record_positions(value_node, (*loc, key), positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_positions(item, (*loc, index), positions)


def _construct(node: yaml.Node):
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _position(loc: Location, positions: dict[Location, tuple[int, int]]) -> tuple[int, int]:
    """The position of the deepest part of `loc` that exists in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in positions:
            return positions[loc[:end]]
    return (1, 1)


def _problem(err: dict, positions: dict[Location, tuple[int, int]]) -> SpecProblem:
    loc = tuple(part for part in err["loc"] if not _is_union_tag(part))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        line, col = positions.get((*loc[:-1], key, "__key__"), _position(loc, positions))
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else (f"known keys: {', '.join(known)}" if known else None)
        return SpecProblem(line, col, f"unknown key '{dotted}'", hint)
    if err["type"] == "missing":
        line, col = _position(loc, positions)
        return SpecProblem(line, col, f"'{dotted}' is required")
    line, col = _position(loc, positions)
    message = err["msg"].removeprefix("Value error, ")
    return SpecProblem(line, col, f"{dotted}: {message}")


def _is_union_tag(part: str | int) -> bool:
    # pydantic adds the union member's type name to a location, e.g. 'function-after[...]'.
    return isinstance(part, str) and ("[" in part or part in {"IPv4Network", "IPv6Network"})


def _known_keys(loc: Location) -> list[str]:
    """Field names allowed at `loc`, found by walking the Spec model along the path."""
    current: object = Spec
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    model = _model_in(current)
    return sorted(model.model_fields) if model else []


def _step(annotation: object, part: str | int) -> object | None:
    model = _model_in(annotation)
    if model is not None:
        field = model.model_fields.get(str(part))
        return field.annotation if field else None
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is list and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
