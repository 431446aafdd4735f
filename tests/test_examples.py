"""The example specs validate, and the example pipelines only use commands and flags that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from assistantctl.cli import main
from assistantctl.schema.loader import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PIPELINES = sorted((EXAMPLES / "ci").glob("*.yml"))


@pytest.mark.parametrize("spec", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_are_valid(spec):
    load_spec(spec)


def invocations(pipeline: Path) -> list[list[str]]:
    found = []
    for line in pipeline.read_text().splitlines():
        match = re.search(r"assistantctl ([^|;&]+)", line)
        if match and not line.lstrip().startswith("#"):
            found.append(shlex.split(match.group(1).split(" || ")[0]))
    return found


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_pipelines_call_real_commands_with_real_flags(pipeline):
    yaml.safe_load(pipeline.read_text())
    calls = invocations(pipeline)
    assert {call[0] for call in calls} >= {"validate", "plan", "apply"}
    for name, *args in calls:
        command = main.commands.get(name)
        assert isinstance(command, click.Command), f"{pipeline.name}: no command {name}"
        known = {opt for param in command.params for opt in param.opts}
        for arg in args:
            if arg.startswith("-"):
                assert arg in known, f"{pipeline.name}: `{name}` has no option {arg}"
