"""assistantctl migrate: rewrite a spec for the current spec version, comments and key order kept."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from .cli_common import EXIT_ERROR, EXIT_OK


@click.command()
@click.option("-f", "--file", "file_", help="The spec file (default: the one given to assistantctl -f).")
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when a migration is pending (for CI).")
@click.option("--write", is_flag=True, help="Rewrite the file in place.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the current-version spec to OUTPUT ('-': standard output).",
)
@click.pass_obj
def migrate(spec_path: str, file_: str | None, check: bool, write: bool, output: str | None) -> None:
    """Rewrite the spec for the current spec version, keeping its comments and key order.

    Prints a unified diff unless --write or --output. Exits 1 on errors and, with --check, when the
    file is written for an older version.
    """
    from .schema.loader import SpecError
    from .schema.migrate import migrate_text
    from .schema.versions import CURRENT_VERSION

    if sum((check, write, output is not None)) > 1:
        raise click.UsageError("choose one of --check, --write and --output")
    path = file_ or spec_path
    try:
        rewrite = migrate_text(Path(path).read_text(encoding="utf-8"), path)
    except SpecError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(EXIT_ERROR)
    except OSError as exc:
        click.echo(f"{path}: {exc.strerror}", err=True)
        sys.exit(EXIT_ERROR)
    changes = "; ".join(rewrite.changes)
    done = f"migrated from spec version {rewrite.written} to {CURRENT_VERSION} ({changes})"
    if output is not None or (write and rewrite.pending):
        target = output if output is not None else path
        try:
            _write(target, rewrite.text)
        except OSError as exc:
            click.echo(f"{target}: {exc.strerror}", err=True)
            sys.exit(EXIT_ERROR)
        if rewrite.pending:
            click.echo(f"{path}: {done}" + ("" if target == path else f", written to {target}"), err=True)
    elif rewrite.pending:
        click.echo(rewrite.diff(path), nl=False)
        verdict = "a migration is pending" if check else "--write rewrites it"
        click.echo(f"{path}: spec version {rewrite.written}, not {CURRENT_VERSION} ({changes}): {verdict}", err=True)
        sys.exit(EXIT_ERROR if check else EXIT_OK)
    if not rewrite.pending:
        click.echo(f"{path}: already spec version {CURRENT_VERSION}", err=True)


def _write(path: str, text: str) -> None:
    """Write `text` to `path` ('-': stdout); an existing file is replaced whole or not at all, mode kept."""
    if path == "-":
        click.echo(text, nl=False)
        return
    target = Path(path).resolve()  # through a symlink: the file it names is rewritten, not the link
    if not target.exists():
        target.write_text(text, encoding="utf-8")
        return
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        shutil.copymode(target, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
