"""The commands that read or change hosts: plan, apply, rollback, status, unlock, stop, backup, restore.

Every change runs under the hosts' deployment locks and ends up in the audit log, on the
controller and on the hosts, whatever its result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import EXIT_CHANGES, EXIT_ERROR, fail, load, secrets, targets


def _plans(spec, spec_path: str, hosts: str | None, with_diff: bool = False) -> list:
    from .bundle import build_bundle
    from .overrides import OverrideError, overrides_for_spec
    from .plan import plan_host
    from .remote import HostUnreachable, fetch_facts

    values = secrets(spec, spec_path)
    try:
        overrides = overrides_for_spec(spec, Path(spec_path).resolve().parent)
    except OverrideError as exc:
        fail(str(exc))
    plans = []
    for target in targets(spec, spec_path, hosts):
        bundle = build_bundle(target, values, shipped=True, overrides=overrides)
        try:
            plan = plan_host(target, bundle, fetch_facts(target))
            if with_diff and plan.changes:
                readable = tuple(c.path for c in plan.changes if not c.sensitive and c.action != "add")
                plan = plan_host(target, bundle, fetch_facts(target, readable))
        except HostUnreachable as exc:
            fail(str(exc))
        plans.append(plan)
    return plans


def _warn_locks(plans: list) -> None:
    from .locking import describe

    for plan in plans:
        if plan.lock:
            click.echo(f"warning: {plan.host} is locked by {describe(plan.lock)}", err=True)


def _audit(action: str, spec_path: str, hosts: list[str], impact: dict, result: str, write_on=(), **extra) -> None:
    """Audit on the controller, and on the `write_on` targets (the hosts that were changed)."""
    from .audit import make_entry, record

    entry = make_entry(action, Path(spec_path), hosts, impact, result, **extra)
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
    """Show what apply would change on each host, without touching anything."""
    from .plan_output import render_json, render_text, summary

    spec = load(spec_path)
    plans = _plans(spec, spec_path, hosts, with_diff)
    _warn_locks(plans)
    from .schema.checks import exposure_warnings

    warnings = exposure_warnings(spec)
    click.echo(render_json(plans, warnings) if as_json else render_text(plans, with_diff, warnings), nl=False)
    if out:
        from .saved_plan import save

        save(Path(out), Path(spec_path).read_text(encoding="utf-8"), spec_path, plans)
        if not as_json:
            click.echo(f"Saved the plan to {out}; `assistantctl apply {out}` applies exactly this plan.")
    _audit("plan", spec_path, [p.host for p in plans], summary(plans), "planned")
    if detailed_exitcode and any(p.has_changes for p in plans):
        sys.exit(EXIT_CHANGES)


@click.command()
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Progress to stderr, a JSON result on stdout.")
@click.pass_obj
def apply(spec_path: str, plan_file: str | None, hosts: str | None, as_json: bool) -> None:
    """Ship, validate, switch, reload and health-check; roll back on any failure.

    With PLAN_FILE (from `plan -o`), apply exactly that plan, or refuse if anything changed since.
    """
    import json

    from .apply import run_apply
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
    results = []
    try:
        if saved:
            verify(saved, plans)
        if changing:
            with locked([p.target for p in changing], "apply"):
                verify_unchanged(changing)
                results = run_apply(plans, echo)
    except (StalePlan, Locked, RuntimeUnavailable) as exc:
        _audit("apply", spec_path, [p.host for p in changing], summary(plans), f"refused: {exc}")
        fail(str(exc))
    outcome = _report(results, "Apply", "changed", echo)
    if as_json:
        hosts_out = [{"host": r.host, "ok": r.ok, "release": r.release, "message": r.message} for r in results]
        click.echo(json.dumps({"result": outcome, "summary": summary(plans), "hosts": hosts_out}, indent=2))
    if changing:
        per_host = {r.host: ("ok " if r.ok else "failed ") + r.release for r in results}
        changed = [p.target for p in changing]
        _audit("apply", spec_path, [p.host for p in changing], summary(plans), outcome, changed, per_host=per_host)
    if outcome == "failed":
        sys.exit(EXIT_ERROR)


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
@click.option("--to", "release", help="Release to go back to (default: the one before the live one).")
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.pass_obj
def rollback(spec_path: str, release: str | None, hosts: str | None) -> None:
    """Point hosts back at an earlier release they still hold; reload, health-check."""
    from .apply import run_rollback
    from .locking import Locked, locked
    from .remote import HostUnreachable, fetch_facts

    spec = load(spec_path)
    choices = []
    for target in targets(spec, spec_path, hosts):
        try:
            facts = fetch_facts(target)
        except HostUnreachable as exc:
            fail(str(exc))
        choice = _rollback_choice(target.host.name, facts, release)
        click.echo(f"{target.host.name}: {facts['release']} -> {choice}")
        choices.append((target, choice))
    impact = {t.host.name: r for t, r in choices}
    try:
        with locked([t for t, _ in choices], "rollback"):
            results = run_rollback(choices, click.echo)
    except Locked as exc:
        fail(str(exc))
    outcome = _report(results, "Rollback", "rolled back")
    _audit("rollback", spec_path, list(impact), impact, outcome, [t for t, _ in choices])
    if outcome == "failed":
        sys.exit(EXIT_ERROR)


def _rollback_choice(host: str, facts: dict, wanted: str | None) -> str:
    releases, live = facts["releases"], facts["release"]
    if wanted:
        if wanted not in releases:
            fail(f"{host}: no release {wanted}; it holds: {', '.join(releases) or 'none'}")
        return wanted
    if live not in releases or releases.index(live) == 0:
        fail(f"{host}: no release before the live one ({live}) to go back to")
    return releases[releases.index(live) - 1]


@click.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(spec_path: str, hosts: str | None, as_json: bool) -> None:
    """Per host: live release, when and by whom it was applied, drift, locks, services, health."""
    import json

    from .locking import describe
    from .remote import HostUnreachable, fetch_facts, host_action

    spec = load(spec_path)
    report = []
    for target in targets(spec, spec_path, hosts):
        try:
            facts = fetch_facts(target, status=True)
            last = host_action(target, "last_audit", actions=["apply", "rollback"])["entry"]
        except HostUnreachable as exc:
            report.append({"host": target.host.name, "error": str(exc)})
            continue
        files = (facts["manifest"] or {}).get("files", {})
        drift = sorted(p for p, e in files.items() if facts["actual"].get(p) != e["sha256"])
        report.append(
            {
                "host": target.host.name,
                "release": facts["release"],
                "applied": {k: last[k] for k in ("time", "actor", "action", "result")} if last else None,
                "drift": drift,
                "lock": facts["lock"],
                "programs": facts["services"]["programs"],
                "health": facts["services"]["health"],
            }
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for row in report:
        if "error" in row:
            click.echo(f"{row['host']}: unreachable: {row['error']}")
            continue
        applied = row["applied"]
        by = f"{applied['action']} by {applied['actor']} at {applied['time']}" if applied else "unknown"
        click.echo(f"{row['host']}: release {row['release'] or '(none)'} ({by})")
        click.echo(f"  health: {row['health']}")
        programs = ", ".join(f"{name} {state}" for name, state in sorted(row["programs"].items()))
        click.echo(f"  programs: {programs or 'none running'}")
        click.echo(f"  drift: {', '.join(row['drift']) or 'none'}")
        if row["lock"]:
            click.echo(f"  locked by {describe(row['lock'])}")


@click.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.pass_obj
def unlock(spec_path: str, hosts: str | None) -> None:
    """Release deployment locks left by a run that died (shows who held them)."""
    from .locking import describe
    from .remote import host_action

    spec = load(spec_path)
    released = []
    for target in targets(spec, spec_path, hosts):
        answer = host_action(target, "unlock", token=None)
        if answer["released"]:
            released.append(target)
            click.echo(f"{target.host.name}: released the lock held by {describe(answer['holder'])}")
        else:
            click.echo(f"{target.host.name}: not locked")
    if released:
        _audit("unlock", spec_path, [t.host.name for t in released], {}, "released", released)


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


@click.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--out", "out", default="backups", show_default=True, type=click.Path(file_okay=False))
@click.pass_obj
def backup(spec_path: str, hosts: str | None, out: str) -> None:
    """Save each host's history database and audit log (no secrets) to OUT/<host>-<time>.tar.gz."""
    import base64
    import time

    from .remote import HostUnreachable, host_action

    spec = load(spec_path)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    done = []
    for target in targets(spec, spec_path, hosts):
        try:
            archive = base64.b64decode(host_action(target, "backup")["archive"])
        except HostUnreachable as exc:
            fail(str(exc))
        path = folder / f"{target.host.name}-{stamp}.tar.gz"
        path.write_bytes(archive)
        path.chmod(0o600)
        click.echo(f"{target.host.name}: {path} ({len(archive)} bytes)")
        done.append(target)
    _audit("backup", spec_path, [t.host.name for t in done], {}, "complete", done)


@click.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "--limit", "hosts", required=True, help="The host to restore onto.")
@click.pass_obj
def restore(spec_path: str, archive: str, hosts: str) -> None:
    """Put a backup's history database back on a host (apply the spec there first)."""
    import base64

    from .locking import Locked, locked
    from .remote import HostUnreachable, host_action

    spec = load(spec_path)
    chosen = targets(spec, spec_path, hosts)
    if len(chosen) != 1:
        raise click.UsageError("restore goes to one host at a time")
    [target] = chosen
    payload = base64.b64encode(Path(archive).read_bytes()).decode()
    try:
        with locked(chosen, "restore"):
            answer = host_action(target, "restore", archive=payload, python=target.python)
    except (Locked, HostUnreachable) as exc:
        fail(str(exc))
    restored = ", ".join(answer["restored"]) or "nothing (the archive holds no history)"
    click.echo(f"{target.host.name}: restored {restored}")
    _audit("restore", spec_path, [target.host.name], {"archive": Path(archive).name}, "complete", chosen)


def register(group: click.Group) -> None:
    for command in (plan, apply, rollback, status, unlock, stop, backup, restore):
        group.add_command(command)
