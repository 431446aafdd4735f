"""assistantctl: validate | render | plan | apply an assistant.yaml.

Heavy modules (Ansible runs, the engine) are imported inside the commands that need them, so
`validate` and `render` start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _load(spec_path: str):
    from .schema.loader import SpecError, load_spec

    try:
        return load_spec(spec_path)
    except SpecError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(EXIT_ERROR)
    except OSError as exc:
        click.echo(f"{spec_path}: {exc.strerror}", err=True)
        sys.exit(EXIT_ERROR)


def _hosts_option(value: str | None) -> set[str] | None:
    return {h.strip() for h in value.split(",") if h.strip()} if value else None


def _targets(spec, spec_path: str, hosts: str | None):
    from .targets import targets

    chosen = _hosts_option(hosts)
    found = targets(spec, Path(spec_path).resolve().parent, chosen)
    if chosen and len(found) != len(chosen):
        unknown = chosen - {t.host.name for t in found}
        raise click.UsageError(f"unknown host(s): {', '.join(sorted(unknown))}")
    return found


def _secrets(spec, spec_path: str) -> dict[str, str]:
    from .schema.secrets import SecretUnavailable, resolve_secrets

    try:
        return resolve_secrets(spec, Path(spec_path).resolve().parent)
    except SecretUnavailable as exc:
        click.echo(f"error: cannot resolve secrets: {exc}", err=True)
        sys.exit(EXIT_ERROR)


@click.group()
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
    spec = _load(spec_path)
    click.echo(
        f"{spec_path}: valid ({len(spec.models.providers)} model(s), default '{spec.models.default}', "
        f"{len(spec.deploy.hosts)} host(s))"
    )


@main.command()
def schema() -> None:
    """Print the JSON Schema of assistant.yaml."""
    from .schema.json_schema import schema_text

    click.echo(schema_text(), nl=False)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), help="Write each host's bundle to OUT/<host>/.")
@click.option("--only", help="Comma-separated renderers, e.g. nginx,prometheus.")
@click.option("--host", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--check", is_flag=True, help="Run each service's own validator on the rendered files.")
@click.pass_obj
def render(spec_path: str, out: str | None, only: str | None, hosts: str | None, check: bool) -> None:
    """Compile the spec into every config file (secret values are never written here)."""
    from .bundle import build_bundle
    from .renderers import all_renderers

    spec = _load(spec_path)
    chosen = _hosts_option(only)
    known = {r.name for r in all_renderers()}
    if chosen and chosen - known:
        raise click.UsageError(
            f"unknown renderer(s): {', '.join(sorted(chosen - known))}; known: {', '.join(sorted(known))}"
        )
    failed = False
    for target in _targets(spec, spec_path, hosts):
        bundle = build_bundle(target, only=chosen)
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

            for result in run_checks(target, chosen):
                click.echo(
                    f"  check {result.folder}: {result.status}" + (f"\n{result.output}" if result.output else "")
                )
                failed |= result.status == "failed"
    sys.exit(EXIT_ERROR if failed else EXIT_OK)


def _plans(spec, spec_path: str, hosts: str | None, with_diff: bool = False):
    from .bundle import build_bundle
    from .plan import plan_host
    from .remote import HostUnreachable, fetch_facts

    secrets = _secrets(spec, spec_path)
    plans = []
    for target in _targets(spec, spec_path, hosts):
        bundle = build_bundle(target, secrets, shipped=True)
        try:
            facts = fetch_facts(target)
            plan = plan_host(target, bundle, facts)
            if with_diff and plan.changes:
                readable = tuple(c.path for c in plan.changes if not c.sensitive and c.action != "add")
                plan = plan_host(target, bundle, fetch_facts(target, readable))
        except HostUnreachable as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        plans.append(plan)
    return plans


@main.command()
@click.option("--diff", "with_diff", is_flag=True, help="Show a unified diff of each changed file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when nothing changes, 2 when something would.")
@click.option("--host", "hosts", help="Comma-separated hosts (default: all).")
@click.pass_obj
def plan(spec_path: str, with_diff: bool, as_json: bool, detailed_exitcode: bool, hosts: str | None) -> None:
    """Show what apply would change on each host, without touching anything."""
    from .plan_output import render_json, render_text

    spec = _load(spec_path)
    plans = _plans(spec, spec_path, hosts, with_diff)
    click.echo(render_json(plans) if as_json else render_text(plans, with_diff), nl=False)
    if detailed_exitcode and any(p.has_changes for p in plans):
        sys.exit(EXIT_CHANGES)


@main.command()
@click.option("--host", "hosts", help="Comma-separated hosts (default: all).")
@click.pass_obj
def apply(spec_path: str, hosts: str | None) -> None:
    """Ship, validate, switch, reload and health-check; roll back on any failure."""
    from .apply import run_apply
    from .plan_output import render_text

    spec = _load(spec_path)
    plans = _plans(spec, spec_path, hosts)
    click.echo(render_text(plans), nl=False)
    results = run_apply(plans, click.echo)
    if not results:
        click.echo("Apply complete: 0 changed.")
        return
    for result in results:
        mark = "ok" if result.ok else "FAILED"
        click.echo(f"{result.host}: {mark} release {result.release}: {result.message}")
    failed = [r for r in results if not r.ok]
    click.echo(
        f"Apply {'failed' if failed else 'complete'}: {len(results) - len(failed)} of {len(results)} host(s) changed."
    )
    if failed:
        sys.exit(EXIT_ERROR)


@main.command()
@click.option("--host", "hosts", help="Comma-separated hosts (default: all local hosts).")
@click.pass_obj
def stop(spec_path: str, hosts: str | None) -> None:
    """Stop every service of the live release on local hosts (the release stays in place)."""
    from .services import stop_local

    spec = _load(spec_path)
    for target in _targets(spec, spec_path, hosts):
        if target.host.connection == "local":
            click.echo(f"{target.host.name}: {stop_local(target)}")
