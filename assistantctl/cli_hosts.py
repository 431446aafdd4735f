"""The commands that read or change hosts: plan, apply, unlock, stop (rollback and status: cli_release.py;
backup and restore: cli_backup.py).

Every change runs under the hosts' deployment locks and ends up in the audit log, on the
controller and on the hosts, whatever its result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_backup import backup, restore  # the commands live there; registered below
from .cli_common import EXIT_CHANGES, EXIT_ERROR, fail, load, secrets, targets
from .cli_release import rollback, status
from .cli_retire import departed_hosts, retire


def _plans(spec, spec_path: str, hosts: str | None, with_diff: bool = False, unreachable: list | None = None) -> list:
    """One plan per chosen host. A host that cannot be reached exits 1 with its one-line cause, or,
    given an `unreachable` list, is added to it as {"host", "error"} while the others are planned."""
    from .bundle import build_bundle
    from .overrides import OverrideError, overrides_for_spec
    from .plan import plan_host
    from .remote import HostUnreachable, fetch_facts
    from .targets import SkillRequirementsError, planned_target

    values = secrets(spec, spec_path)
    try:
        overrides = overrides_for_spec(spec, Path(spec_path).resolve().parent)
    except OverrideError as exc:
        fail(str(exc))
    plans = []
    for target in targets(spec, spec_path, hosts):
        try:
            facts = fetch_facts(target)
            # the skill folders' requirements: the runtime they resolve to on this host's platform
            target = planned_target(target, facts)
            bundle = build_bundle(target, values, shipped=True, overrides=overrides)
            plan = plan_host(target, bundle, facts)
            if with_diff and plan.changes:
                readable = tuple(c.path for c in plan.changes if not c.sensitive and c.action != "add")
                plan = plan_host(target, bundle, fetch_facts(target, readable))
        except HostUnreachable as exc:
            if unreachable is None:
                fail(str(exc))
            unreachable.append({"host": exc.host, "error": str(exc)})
            continue
        except SkillRequirementsError as exc:  # before anything changes on any host
            fail(str(exc))
        plans.append(plan)
    return plans


def _warn_locks(plans: list) -> None:
    from .locking import describe

    for plan in plans:
        if plan.lock:
            click.echo(f"warning: {plan.host} is locked by {describe(plan.lock)}", err=True)


def _audit(
    action: str, spec_path: str, hosts: list[str], impact: dict, result: str, write_on=(), run=None, **extra
) -> None:
    """Audit on the controller, and on the `write_on` targets (the hosts that were changed). `run`:
    the id `audit.start` gave, so this entry closes that run's "started" entry."""
    from .audit import make_entry, record

    entry = make_entry(action, Path(spec_path), hosts, impact, result, **extra, **({"run": run} if run else {}))
    missed = record(entry, Path(spec_path), list(write_on))
    if missed:
        click.echo(f"warning: audit entry not written on: {', '.join(missed)}", err=True)


@click.command()
@click.option("--diff", "with_diff", is_flag=True, help="Show a unified diff of each changed file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when nothing changes, 2 when something would.")
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), help="Save the plan for `apply PLAN`.")
@click.pass_obj
def plan(spec_path: str, with_diff: bool, as_json: bool, detailed_exitcode: bool, hosts: str | None, out) -> None:
    """Show what apply would change on each host, without touching anything.

    A host that cannot be reached is listed with its cause, the others are planned, and the exit
    code is 1 (with or without --detailed-exitcode).
    """
    import json

    from .plan_output import render_json, render_text, summary

    spec = load(spec_path)
    unreachable: list[dict] = []
    plans = _plans(spec, spec_path, hosts, with_diff, unreachable)
    _warn_locks(plans)
    from .schema.checks import exposure_warnings

    warnings = exposure_warnings(spec)
    webhook = _telegram_drift(spec, spec_path)
    # every host of the spec, not only the chosen ones: a host left out by --host has not left
    departed = departed_hosts(spec, spec_path)
    if as_json:
        report = json.loads(render_json(plans, warnings))
        left = [{"host": d.name, "root": d.root, "address": d.host.get("address")} for d in departed]
        extra = {"unreachable": unreachable, "departed": left, "telegram_webhook": webhook}
        click.echo(json.dumps({**report, **extra}, indent=2))
    else:
        click.echo(render_text(plans, with_diff, warnings), nl=False)
        if webhook:
            click.echo(webhook)
        for host in unreachable:
            click.echo(f"host {host['error']}")
        for gone in departed:
            click.echo(f"- host {gone.describe()} left the spec and still runs what apply put there;")
            click.echo(f"  `assistantctl retire {gone.name}` removes it")
    if unreachable:
        lost = ", ".join(h["host"] for h in unreachable)
        _audit("plan", spec_path, [p.host for p in plans], summary(plans), f"unreachable: {lost}")
        # a saved plan must cover every host it was asked for
        fail(f"unreachable: {lost}; nothing planned there" + ("; the plan was not saved" if out else ""))
    if out:
        from .saved_plan import save

        save(Path(out), Path(spec_path).read_text(encoding="utf-8"), spec_path, plans)
        if not as_json:
            click.echo(f"Saved the plan to {out}; `assistantctl apply {out}` applies exactly this plan.")
    _audit("plan", spec_path, [p.host for p in plans], summary(plans), "planned")
    if detailed_exitcode and (any(p.has_changes for p in plans) or departed or webhook):
        sys.exit(EXIT_CHANGES)


@click.command()
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Progress to stderr, a JSON result on stdout.")
@click.option("--auto-approve", is_flag=True, help="Apply without asking (needed off a terminal without PLAN_FILE).")
@click.pass_obj
def apply(spec_path: str, plan_file: str | None, hosts: str | None, as_json: bool, auto_approve: bool) -> None:
    """Ship, validate, switch, reload and health-check; roll back on any failure.

    With PLAN_FILE (from `plan -o`), apply exactly that plan, or refuse if anything changed since:
    the plan was the review. Without it, the plan is shown and applied after a typed `yes` on a
    terminal; elsewhere (CI, scripts) only with --auto-approve.
    """
    import json

    from .apply import run_apply
    from .audit import failure, start
    from .locking import Locked, locked
    from .plan_output import render_text, summary
    from .runtime import RuntimeUnavailable
    from .saved_plan import StalePlan, verify
    from .saved_plan import load as load_plan

    saved = None
    if plan_file:
        try:
            saved = load_plan(Path(plan_file))
        except StalePlan as exc:
            fail(str(exc))
        if hosts:
            raise click.UsageError("a saved plan covers the hosts it was made for; --host does not apply")
    spec = load(spec_path, saved.spec_text if saved else None)
    plans = _plans(spec, spec_path, hosts)
    echo = _echo(as_json)
    echo(render_text(plans).rstrip("\n"))
    changing = [p for p in plans if p.has_changes]
    if changing and not saved and not auto_approve:
        _confirm(spec_path, [p.host for p in changing], summary(plans), interactive=not as_json)
    results, run, names = [], None, [p.host for p in changing]
    try:
        if saved:
            verify(saved, plans)
        if changing:
            with locked([p.target for p in changing], "apply"):
                verify_unchanged(changing)
                run = start("apply", Path(spec_path), names, summary(plans))
                try:
                    results = run_apply(plans, echo)
                except (StalePlan, Locked, RuntimeUnavailable):
                    raise
                except BaseException as exc:  # Ctrl-C or a bug: the run still gets its result entry
                    _audit("apply", spec_path, names, summary(plans), failure(exc), [p.target for p in changing], run)
                    raise
    except (StalePlan, Locked, RuntimeUnavailable) as exc:
        _audit("apply", spec_path, names, summary(plans), f"refused: {exc}", run=run)
        fail(str(exc))
    outcome = _report(results, "Apply", "changed", echo)
    if outcome != "failed" and not _telegram_register(spec, spec_path, echo):
        outcome = "failed"
    if as_json:
        hosts_out = [{"host": r.host, "ok": r.ok, "release": r.release, "message": r.message} for r in results]
        click.echo(json.dumps({"result": outcome, "summary": summary(plans), "hosts": hosts_out}, indent=2))
    from .departed import remember

    # where a release of this spec now runs (a no-op included: deployments older than the record)
    applied_ok = {r.host for r in results if r.ok}
    deployed = [p.target for p in plans if p.host in applied_ok or (not p.has_changes and p.live_release)]
    remember(Path(spec_path), deployed)
    if changing:
        per_host = {r.host: ("ok " if r.ok else "failed ") + r.release for r in results}
        changed = [p.target for p in changing]
        _audit("apply", spec_path, names, summary(plans), outcome, changed, run, per_host=per_host)
    else:  # a no-op is a run too: who checked, when, against which spec
        _audit("apply", spec_path, [p.host for p in plans], summary(plans), "no changes")
    if outcome == "failed":
        sys.exit(EXIT_ERROR)


def _telegram_drift(spec, spec_path: str) -> str | None:
    """plan's line for Telegram's webhook registration when it differs from the spec."""
    from .telegram_webhook import TelegramError, drift, wanted

    want = wanted(spec, secrets(spec, spec_path))
    if want is None:
        return None
    try:
        return drift(want)
    except TelegramError as exc:  # the hosts' plan stands; only this check is missing
        click.echo(f"warning: {exc}; the webhook registration was not checked", err=True)
        return None


def _telegram_register(spec, spec_path: str, echo) -> bool:
    """After the hosts switched: make Telegram's webhook registration the spec's; False on failure."""
    from .telegram_webhook import TelegramError, sync, wanted

    want = wanted(spec, secrets(spec, spec_path))
    if want is None:
        return True
    try:
        changed = sync(want)
        if changed is not None:
            echo(changed)
    except TelegramError as exc:
        echo(f"error: {exc}")
        return False
    return True


def _confirm(spec_path: str, hosts: list[str], impact: dict, interactive: bool) -> None:
    """Terraform's rule: a change reviewed nowhere else is typed `yes` to, or explicitly pre-approved."""
    if not (interactive and sys.stdin.isatty() and sys.stdout.isatty()):
        _audit("apply", spec_path, hosts, impact, "refused: not approved")
        fail("apply changes hosts: review the plan above and pass --auto-approve, or apply a saved plan (`plan -o`)")
    answer = click.prompt("Apply these changes? Only 'yes' is accepted", default="", show_default=False)
    if answer.strip() != "yes":
        _audit("apply", spec_path, hosts, impact, "cancelled")
        fail("apply cancelled; nothing changed")


def _echo(to_stderr: bool):
    return lambda text: click.echo(text, err=to_stderr)


def _report(results: list, verb: str, done: str, echo=click.echo) -> str:
    """One line per host (a failure carries the tool's own message) and a summary; returns the outcome."""
    failed = [r for r in results if not r.ok]
    for r in results:
        echo(f"{r.host}: {'ok' if r.ok else 'FAILED'} release {r.release}: {r.message}")
    outcome = "failed" if failed else "complete"
    if not results:
        echo(f"{verb} complete: 0 {done}.")
    else:
        echo(f"{verb} {outcome}: {len(results) - len(failed)} of {len(results)} host(s) {done}.")
    return outcome


def verify_unchanged(plans: list) -> None:
    """Between planning and taking the locks another run may have finished: plan again if so."""
    from .plan import live_digest
    from .remote import fetch_facts
    from .saved_plan import StalePlan

    for plan in plans:
        if live_digest(fetch_facts(plan.target)) != plan.live_digest:
            raise StalePlan(f"{plan.host}: another run changed the host while this one was planning; plan again")


@click.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--force", is_flag=True, help="Release locks whose holder still runs, or cannot be checked.")
@click.pass_obj
def unlock(spec_path: str, hosts: str | None, force: bool) -> None:
    """Release deployment locks left by a run that died (shows who held them).

    A holder still running on this controller, or one on another controller, keeps its lock
    unless --force: two runs at once undo each other's work.
    """
    from .locking import GONE, describe, liveness
    from .remote import HostUnreachable, host_action

    spec = load(spec_path)
    released, refused, forced = [], [], False
    for target in targets(spec, spec_path, hosts):
        name = target.host.name
        try:
            held = host_action(target, "read_lock")["holder"]
            if held is None:
                click.echo(f"{name}: not locked")
                continue
            alive = liveness(held)
            if alive.state != GONE and not force:
                refused.append(name)
                click.echo(f"error: {name} is locked by {describe(held)}: {alive.reason}; not released", err=True)
                continue
            # only the lock that was judged: a run that took it over meanwhile keeps it
            answer = host_action(target, "unlock", token=held.get("token"))
        except HostUnreachable as exc:
            refused.append(name)
            click.echo(f"{name}: {exc}", err=True)
            continue
        if not answer["released"]:
            click.echo(f"{name}: not released: the lock changed hands meanwhile ({describe(answer['holder'])})")
            continue
        released.append(target)
        if alive.state == GONE:
            click.echo(f"{name}: released the stale lock held by {describe(held)}: {alive.reason}")
        else:
            forced = True
            click.echo(f"{name}: forced open the lock held by {describe(held)}, overriding: {alive.reason}")
    if released:
        _audit("unlock", spec_path, [t.host.name for t in released], {}, "forced" if forced else "released", released)
    if refused:
        fail(f"not released on {', '.join(refused)}: `unlock --force` overrides (two runs at once undo each other)")


@click.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all local hosts).")
@click.pass_obj
def stop(spec_path: str, hosts: str | None) -> None:
    """Stop every service of the live release on local hosts (the release stays in place)."""
    from .services import stop_local

    spec = load(spec_path)
    for target in targets(spec, spec_path, hosts):
        if target.host.connection == "local":
            click.echo(f"{target.host.name}: {stop_local(target)}")


def register(group: click.Group) -> None:
    for command in (plan, apply, rollback, status, unlock, stop, backup, restore, retire):
        group.add_command(command)
