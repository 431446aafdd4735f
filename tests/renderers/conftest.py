"""Shared helpers for renderer tests: build a validated Spec and a Target from the default spec."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from assistantctl.renderers import Target
from assistantctl.schema.loader import parse_spec

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "assistant.yaml"


def merged(base: dict, overrides: dict) -> dict:
    """`overrides` laid over `base` key by key; nested mappings merge, anything else replaces."""
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


MakeTarget = Callable[..., Target]


@pytest.fixture
def make_target(tmp_path: Path) -> MakeTarget:
    """`make_target(overrides=None, host=None, root=None)`: the default spec with `overrides`
    merged in, parsed through the real loader (so SpecError surfaces), targeting `host` (the first
    host by default) with its root under tmp_path and this interpreter as the host's python."""

    def make(overrides: dict | None = None, host: str | None = None, root: str | Path | None = None) -> Target:
        data = merged(yaml.safe_load(DEFAULT_SPEC.read_text(encoding="utf-8")), overrides or {})
        spec = parse_spec(yaml.safe_dump(data, sort_keys=False))
        chosen = next(h for h in spec.deploy.hosts if host is None or h.name == host)
        return Target(spec=spec, host=chosen, root=str(root or tmp_path / "root"), python=sys.executable)

    return make


def _write_files(folder: Path, files: dict[str, str]) -> Path:
    """Write rendered `{relative path: text}` under `folder`; returns `folder`."""
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def _make_root(root: Path) -> Path:
    """The directories apply creates on a host before the first release."""
    for sub in ("releases", "run", "logs", "data", "tmp/nginx"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def write_files() -> Callable[[Path, dict[str, str]], Path]:
    return _write_files


@pytest.fixture
def make_root() -> Callable[[Path], Path]:
    return _make_root
