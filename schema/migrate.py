"""Rewrite a spec file for the current spec version, keeping its comments, key order and layout.

ruamel.yaml's round-trip mode reads the file into mappings that remember comments, quotes and key
order; the steps of `schema.versions` edit those, so only what a step changed comes out different.
The loader does the same migration in memory; this module writes it down.
"""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass

from ruamel.yaml import YAML, YAMLError

from .loader import SpecError, SpecProblem, parse_spec
from .versions import CURRENT_VERSION, upgrade

# Indentation styles (mapping, sequence, offset) tried in turn; the one that reproduces the file
# unchanged is used, so the rewrite does not re-indent the parts no step touched.
STYLES = [(2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0)]


@dataclass(frozen=True)
class Rewrite:
    """A spec file's text for the current version, and what changed to get there."""

    before: str
    text: str  # `before` itself when nothing was pending
    written: int  # the version `before` is written for
    changes: list[str]  # one line per migration step applied

    @property
    def pending(self) -> bool:
        return bool(self.changes)

    def diff(self, filename: str) -> str:
        """A unified diff from the file as written to its rewrite ("" when nothing is pending)."""
        lines = difflib.unified_diff(
            _lines(self.before),
            _lines(self.text),
            f"{filename} (version {self.written})",
            f"{filename} (version {CURRENT_VERSION})",
        )
        return "".join(lines)


def migrate_text(text: str, filename: str) -> Rewrite:
    """The file `text` (named `filename` in errors) rewritten for the current spec version.

    The file must load as it is: a `SpecError` names its problems where they are. The rewrite is
    loaded again and must give the very spec the original gave, or `SpecError` says so (a bug in a
    migration step: the file is then left as it is)."""
    spec = parse_spec(text, filename)
    try:
        yaml = _round_trip(text)
        data = yaml.load(text)
    except YAMLError as exc:  # PyYAML read it, but ruamel.yaml (YAML 1.2) does not
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError(filename, [SpecProblem(line, column, f"cannot rewrite this YAML: {exc}")]) from None
    done = upgrade(data)
    if not done.steps:
        return Rewrite(text, text, done.written, [])
    rewritten = _dump(yaml, data)
    try:
        same = parse_spec(rewritten, filename) == spec
    except SpecError:
        same = False
    if not same:
        message = f"migrating from version {done.written} would change what the file means; it is left as it is"
        raise SpecError(filename, [SpecProblem(1, 1, message, "this is a bug in assistantctl: please report it")])
    return Rewrite(text, rewritten, done.written, [step.change for step in done.steps])


def _round_trip(text: str) -> YAML:
    """A round-trip YAML writer in the indentation style of `text` (the closest one if none matches)."""
    candidates = []
    for mapping, sequence, offset in STYLES:
        yaml = YAML()  # round-trip mode
        yaml.preserve_quotes = True
        yaml.width = 1_000_000  # never re-wrap a long line
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        again = _dump(yaml, yaml.load(text))
        if again == text:
            return yaml
        candidates.append((difflib.SequenceMatcher(None, _lines(text), _lines(again)).ratio(), yaml))
    return max(candidates, key=lambda candidate: candidate[0])[1]


def _dump(yaml: YAML, data: object) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"  # a last line without its newline would run into the diff's next line
    return lines
