"""Secret references in a spec: find them, name them, and resolve them on the controller.

A secret is known by the dotted location of its field (`models.providers.cloud.api_key`); that
name is what rendered configs carry. Values are read only by `resolve_secrets`, at apply time.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from .spec import Spec
from .types import SECRET_REF


class SecretUnavailable(Exception):
    """A reference that cannot be resolved here; the message names the reference, never a value."""


def secret_refs(spec: Spec) -> dict[str, str]:
    """Every secret reference in the spec, keyed by the dotted location of its field."""
    found: dict[str, str] = {}
    _walk(spec, "", found)
    return dict(sorted(found.items()))


def _walk(value: object, prefix: str, found: dict[str, str]) -> None:
    if isinstance(value, BaseModel):
        for field in type(value).model_fields:
            _walk(getattr(value, field), f"{prefix}{field}.", found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{prefix}{key}.", found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{prefix}{index}.", found)
    elif isinstance(value, str) and SECRET_REF.match(value):
        found[prefix.rstrip(".")] = value


def resolve_secret(ref: str, base_dir: Path) -> str:
    kind, name = SECRET_REF.match(ref).groups()
    if kind == "env":
        if name not in os.environ:
            raise SecretUnavailable(f"{ref}: environment variable {name} is not set")
        return os.environ[name]
    path = (base_dir / name).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretUnavailable(f"{ref}: cannot read {path}: {exc.strerror}") from None


def resolve_secrets(spec: Spec, base_dir: Path) -> dict[str, str]:
    """Resolve every reference; raise `SecretUnavailable` listing all that are missing."""
    values, missing = {}, []
    for name, ref in secret_refs(spec).items():
        try:
            values[name] = resolve_secret(ref, base_dir)
        except SecretUnavailable as exc:
            missing.append(str(exc))
    if missing:
        raise SecretUnavailable("; ".join(missing))
    return values
