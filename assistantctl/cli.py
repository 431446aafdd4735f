"""assistantctl: validate | render | plan | apply an assistant.yaml.

Heavy modules (Ansible runs, the engine) are imported inside the commands that need them, so
`validate` and `render` start fast. The commands that touch hosts live in cli_hosts.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import cli_audit, cli_chat, cli_compose, cli_hosts, cli_keys, cli_migrate
from .cli_common import EXIT_ERROR, EXIT_OK, fail, load, names, targets


def _print_version(ctx: click.Context, _param: click.Parameter, wanted: bool) -> None:
    """The installed version, and the id of the engine runtime SSH hosts get from this controller."""
    if not wanted or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    from .runtime import RuntimeUnavailable, controller_runtime

    try:
        runtime = f" (engine runtime {controller_runtime().id})"
    except RuntimeUnavailable:  # a dependency of the engine is missing here: it builds no runtime
        runtime = ""
    click.echo(f"assistantctl {version('assistantctl')}{runtime}")
    ctx.exit()


@click.group()
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the engine runtime id, then exit.",
)
@click.option(
    "-f",
    "--file",
    "spec_path",
    default="assistant.yaml",
    envvar="ASSISTANT_SPEC",
    show_default=True,
    help="The spec file.",
)
@click.pass_context
def main(ctx: click.Context, spec_path: str) -> None:
    """Declare a self-hosted AI assistant in one file; validate, render, plan and apply it."""
    ctx.obj = spec_path


@main.command()
@click.pass_obj
def validate(spec_path: str) -> None:
    """Check the spec: shapes, references between sections, secrets as references."""
    spec = load(spec_path)
    click.echo(
        f"{spec_path}: valid ({len(spec.models.providers)} model(s), default '{spec.models.default}', "
        f"{len(spec.deploy.hosts)} host(s))"
    )


@main.command()
@click.option("--markdown", is_flag=True, help="Print the reference in Markdown (docs/spec.md) instead.")
def schema(markdown: bool) -> None:
    """Print the JSON Schema of assistant.yaml."""
    if markdown:
        from .schema.markdown import markdown_text

        click.echo(markdown_text(), nl=False)
        return
    from .schema.json_schema import schema_text

    click.echo(schema_text(), nl=False)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), help="Write each host's bundle to OUT/<host>/.")
@click.option("--only", help="Comma-separated renderers, e.g. nginx,prometheus.")
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--check", is_flag=True, help="Run each service's own validator on the rendered files.")
@click.option(
    "--allow-missing", is_flag=True, help="With --check: a validator not installed here is reported, not an error."
)
@click.pass_obj
def render(
    spec_path: str, out: str | None, only: str | None, hosts: str | None, check: bool, allow_missing: bool
) -> None:
    """Compile the spec into every config file (secret values are never written here).

    With --check, exits 1 when a validator rejects a file or is not installed (unless --allow-missing).
    """
    from .bundle import build_bundle
    from .overrides import OverrideError, overrides_for_spec
    from .renderers import all_renderers

    spec = load(spec_path)
    try:
        overrides = overrides_for_spec(spec, Path(spec_path).resolve().parent)
    except OverrideError as exc:
        fail(str(exc))
    chosen = names(only)
    known = {r.name for r in all_renderers()}
    if chosen and chosen - known:
        raise click.UsageError(
            f"unknown renderer(s): {', '.join(sorted(chosen - known))}; known: {', '.join(sorted(known))}"
        )
    failed = False
    missing: dict[str, str] = {}  # renderer folder -> the validator program that is not installed
    for target in targets(spec, spec_path, hosts):
        bundle = build_bundle(target, only=chosen, overrides=overrides)
        if out:
            directory = Path(out) / target.host.name
            bundle.write(directory)
            click.echo(f"{target.host.name}: {len(bundle.files)} files in {directory} (bundle {bundle.id})")
        else:
            click.echo(f"{target.host.name}: bundle {bundle.id}")
            for f in bundle.files:
                click.echo(f"  {f.path}  {f.sha256[:12]}  {f.service}")
        if check:
            from .checks import run_checks

            for result in run_checks(target, chosen, overrides):
                click.echo(
                    f"  check {result.folder}: {result.summary}" + (f"\n{result.output}" if result.output else "")
                )
                failed |= result.status == "failed"
                if result.status == "missing":
                    missing[result.folder] = result.program
    if missing and not allow_missing:
        # An unchecked config must not pass for a checked one: CI would go green on a machine without nginx.
        named = ", ".join(f"{folder} ({program})" for folder, program in sorted(missing.items()))
        click.echo(f"error: validators missing: {named}; install them, or pass --allow-missing", err=True)
        failed = True
    sys.exit(EXIT_ERROR if failed else EXIT_OK)


cli_hosts.register(main)
main.add_command(cli_keys.keys)
main.add_command(cli_audit.audit)
main.add_command(cli_migrate.migrate)
main.add_command(cli_chat.chat)
main.add_command(cli_compose.compose)
