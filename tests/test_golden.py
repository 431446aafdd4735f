"""Every rendered file of the default and the production spec, byte for byte against tests/golden/."""

from __future__ import annotations

import difflib

import pytest
from golden.update import SPECS, UPDATE_COMMAND, render_spec, stored


def _diff(path: str, expected: bytes | None, actual: bytes | None) -> str:
    before = (expected or b"").decode("utf-8", "replace").splitlines(keepends=True)
    after = (actual or b"").decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"golden/{path}", f"rendered/{path}"))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rendered_files_match_the_golden_files(name):
    expected, actual = stored(name), render_spec(SPECS[name])
    assert expected, f"no golden files for {name}: run {UPDATE_COMMAND}"
    problems = []
    for path in sorted(expected.keys() | actual.keys()):
        if path not in actual:
            problems.append(f"- {path}: in the golden files, no longer rendered")
        elif path not in expected:
            problems.append(f"+ {path}: rendered, missing from the golden files")
        elif expected[path] != actual[path]:
            problems.append(f"~ {path}:\n{_diff(path, expected[path], actual[path])}")
    if problems:
        pytest.fail(
            f"{name}: {len(problems)} file(s) differ from tests/golden/{name}/\n\n"
            + "\n".join(problems)
            + f"\n\nIf the change is intended, regenerate and review: {UPDATE_COMMAND}",
            pytrace=False,
        )
