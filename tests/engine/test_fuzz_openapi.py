"""Schemathesis against a real engine on loopback, driven by the OpenAPI document the engine serves.

Every documented operation, every check schemathesis has (no 5xx, documented status codes and
content types, response bodies and each server-sent event against their schemas, schema-invalid
requests refused and schema-valid ones accepted, 405 with `Allow` for other methods ...), in all
its phases (examples, coverage, fuzzing, stateful). Bounded by examples per operation, so the
whole run takes seconds; FUZZ_SEED picks another seed (the default one makes CI repeatable) and
FUZZ_EXAMPLES more examples, for a longer run by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine_process import RunningEngine, model, start_engine, stop_engine

SCHEMATHESIS = Path(sys.executable).with_name("st")
SEED = os.environ.get("FUZZ_SEED", "20261201")
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "30")


@pytest.fixture(scope="module")
def engine(module_dir: Path) -> Iterator[RunningEngine]:
    running = start_engine(module_dir / "fuzz", [model("local"), model("spare")])
    yield running
    stop_engine(running)


def test_schemathesis_finds_no_failure_against_the_served_document(engine: RunningEngine, tmp_path: Path) -> None:
    assert SCHEMATHESIS.exists(), "schemathesis is missing: pip install -e '.[test]'"
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{engine.url}/openapi.json",
        "--checks=all",
        f"--max-examples={EXAMPLES}",
        f"--seed={SEED}",
        "--request-timeout=10",
        "--generation-database=none",
        "--no-color",
        "--workers=1",  # two workers made schemathesis itself fail now and then (a Hypothesis FlakyFailure)
    ]
    # No browser runs here, so the screenshot download answers 404 to every name: its "missing test
    # data" warning is expected, not a finding (tests/engine/test_browser_tool.py downloads a real one).
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path = "/api/v1/workspace/screenshots/{name}"\nwarnings = false\n'
    )
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    report = run.stdout[-25_000:] + run.stderr[-5_000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout, report
