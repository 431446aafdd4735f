"""What every command needs: load the spec (or exit with its errors), pick targets, resolve secrets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def load(spec_path: str, text: str | None = None):
    """The validated spec from `spec_path` (or from `text`, named after it); exits 1 on errors.

    A spec written for an older spec version loads, with a warning on stderr."""
    from .schema.loader import SpecError, load_spec, parse_spec

    def warn(note: str) -> None:
        click.echo(f"warning: {note}", err=True)

    try:
        return parse_spec(text, spec_path, warn) if text is not None else load_spec(spec_path, warn)
    except SpecError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(EXIT_ERROR)
    except OSError as exc:
        click.echo(f"{spec_path}: {exc.strerror}", err=True)
        sys.exit(EXIT_ERROR)


def names(value: str | None) -> set[str] | None:
    return {h.strip() for h in value.split(",") if h.strip()} if value else None


def targets(spec, spec_path: str, hosts: str | None):
    from .runtime import RuntimeUnavailable
    from .targets import targets as spec_targets

    chosen = names(hosts)
    try:
        found = spec_targets(spec, Path(spec_path).resolve().parent, chosen)
    except RuntimeUnavailable as exc:
        fail(str(exc))
    if chosen and len(found) != len(chosen):
        unknown = chosen - {t.host.name for t in found}
        raise click.UsageError(f"unknown host(s): {', '.join(sorted(unknown))}")
    return found


def secrets(spec, spec_path: str) -> dict[str, str]:
    from .schema.secrets import SecretUnavailable, resolve_secrets

    try:
        return resolve_secrets(spec, Path(spec_path).resolve().parent)
    except SecretUnavailable as exc:
        fail(f"cannot resolve secrets: {exc}")
