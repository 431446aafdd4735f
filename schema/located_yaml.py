"""YAML read with the line and column of every key and value, and problems that name them.

Both the spec (schema/loader.py) and the skill folders' config.yaml (schema/skill_folders.py) are
read this way, so every error a user sees reads `file:line:column: message (hint: ...)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from .versions import Location


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


def read_yaml(
    text: str, filename: str, empty_hint: str | None = None
) -> tuple[object, dict[Location, tuple[int, int]], list[SpecProblem]]:
    """A YAML file's data, the line and column of each of its keys and values, and every key set
    twice (a problem to report with the others); raises `SpecError` for YAML that does not parse."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(filename, [SpecProblem(line, col, f"invalid YAML: {problem}")]) from None
    if node is None:
        raise SpecError(filename, [SpecProblem(1, 1, "the file is empty", empty_hint)])
    positions: dict[Location, tuple[int, int]] = {}
    _record_positions(node, (), positions)
    data, problems = _construct(node)
    return data, positions, problems


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


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key set twice in one mapping is a problem instead of "last wins".

    A `<<` merge may still be overridden by the mapping's own keys: that is what merges are for.
    """

    def __init__(self) -> None:
        super().__init__("")
        self.duplicates: list[SpecProblem] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: PyYAML itself refuses it below
                continue
            if first is not key_node:
                mark, was = key_node.start_mark, first.start_mark
                hint = f"it is first set at line {was.line + 1}, column {was.column + 1}"
                self.duplicates.append(SpecProblem(mark.line + 1, mark.column + 1, f"duplicate key '{key}'", hint))
        return super().construct_mapping(node, deep)


def _construct(node: yaml.Node) -> tuple[object, list[SpecProblem]]:
    """The plain data of the composed document, and every key set twice in one mapping."""
    loader = _SpecLoader()
    try:
        return loader.construct_document(node), loader.duplicates
    finally:
        loader.dispose()


def locate(loc: Location, positions: dict[Location, tuple[int, int]]) -> tuple[int, int]:
    """The line and column of `loc` in a file read by `read_yaml`: its deepest part that exists there."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in positions:
            return positions[loc[:end]]
    return (1, 1)
