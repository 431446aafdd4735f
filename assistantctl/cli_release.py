"""The commands that move or show hosts' releases: rollback to an earlier one, and status.

Both read the hosts' facts; rollback changes hosts under their deployment locks and is audited
like apply (cli_hosts.py).
"""

from __future__ import annotations

import sys

import click

from .cli_common import EXIT_ERROR, fail, load, targets


def _audit(*args, **kwargs) -> None:
    from .cli_hosts import _audit as audit  # late: cli_hosts imports this module

    audit(*args, **kwargs)


def _report(*args, **kwargs) -> str:
    from .cli_hosts import _report as report

    return report(*args, **kwargs)


@click.command()
@click.option("--to", "release", help="Release to go back to (default: the last good one before the live one).")
@click.option("--force", is_flag=True, help="Go back to a release even if it failed when it was applied.")
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.pass_obj
def rollback(spec_path: str, release: str | None, force: bool, hosts: str | None) -> None:
    """Point hosts back at an earlier release they still hold; reload, health-check.

    A release that failed its apply (marked FAILED on the host) is never chosen by default and is
    refused with --to unless --force is given."""
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
        choice = _rollback_choice(target.host.name, facts, release, force)
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


def _rollback_choice(host: str, facts: dict, wanted: str | None, force: bool = False) -> str:
    releases, live, failed = facts["releases"], facts["release"], facts.get("failed", {})
    if wanted:
        if wanted not in releases:
            held = ", ".join(f"{r} (failed)" if r in failed else r for r in releases)
            fail(f"{host}: no release {wanted}; it holds: {held or 'none'}")
        if wanted in failed and not force:
            fail(f"{host}: release {wanted} failed {_why(failed[wanted])}; --force goes back to it anyway")
        return wanted
    good = [r for r in releases[: releases.index(live)] if r not in failed] if live in releases else []
    if not good:
        fail(f"{host}: no good release before the live one ({live}) to go back to")
    return good[-1]


@click.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(spec_path: str, hosts: str | None, as_json: bool) -> None:
    """Per host: live release, when and by whom it was applied, drift (files, and what runs against
    the live release), locks, services, health through each path (engine directly, nginx → engine),
    and the last failed apply. Exits 1 when a host cannot be reached (the others are still shown)."""
    import json

    from .locking import describe
    from .plan import running_drift
    from .remote import HostUnreachable, fetch_facts, host_action

    spec = load(spec_path)
    report = []
    for target in targets(spec, spec_path, hosts):
        try:
            facts = fetch_facts(target, status=True)
            last = host_action(target, "last_audit", actions=["apply", "rollback"])
        except HostUnreachable as exc:
            report.append({"host": target.host.name, "error": str(exc)})
            continue
        files = (facts["manifest"] or {}).get("files", {})
        drift = sorted(p for p, e in files.items() if facts["actual"].get(p) != e["sha256"])
        paths = {name: check["status"] for name, check in facts["running"]["health"].items()}
        report.append(
            {
                "host": target.host.name,
                "release": facts["release"],
                "applied": _applied(last),
                "audit_problem": last.get("problem"),
                "drift": drift,
                "running_drift": [d.problem for d in running_drift(facts)],
                "lock": facts["lock"],
                "programs": facts["running"]["programs"] or {},
                "health": _health(paths),
                "health_paths": paths,
                "last_failure": facts.get("last_failure"),
            }
        )
    unreachable = any("error" in row for row in report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        if unreachable:
            sys.exit(EXIT_ERROR)
        return
    for row in report:
        if "error" in row:
            click.echo(row["error"])
            continue
        applied = row["applied"]
        by = f"{applied['action']} by {applied['actor']} at {applied['time']}" if applied else "unknown"
        if row["audit_problem"]:  # never show an entry the chain does not vouch for
            by = f"unknown: the host's audit log fails verification at {row['audit_problem']}"
        elif applied and not applied["verified"]:
            by += ", from an audit entry written before the log was chained"
        click.echo(f"{row['host']}: release {row['release'] or '(none)'} ({by})")
        click.echo(f"  health: {row['health']}")
        programs = ", ".join(f"{name} {state}" for name, state in sorted(row["programs"].items()))
        click.echo(f"  programs: {programs or 'none running'}")
        click.echo(f"  drift: {', '.join(row['drift']) or 'none'}")
        click.echo(f"  running: {'; '.join(row['running_drift']) or 'as the live release says'}")
        if row["lock"]:
            click.echo(f"  locked by {describe(row['lock'])}")
        if row["last_failure"]:
            failure = row["last_failure"]
            click.echo(f"  last failed apply: release {failure.get('release')} {_why(failure)}")
    if unreachable:
        sys.exit(EXIT_ERROR)


def _health(paths: dict[str, str]) -> str:
    """Says ok only when every path the release serves through answers; else each path's answer."""
    if not paths:
        return "nothing to check (no engine or nginx in the live release)"
    if all(status == "ok" for status in paths.values()):
        return "ok"
    return "; ".join(f"{path} {status}" for path, status in paths.items())


def _why(failure: dict) -> str:
    """When and why, from a host's record of a failed apply (playbooks/apply.yml), in one line."""
    reason = next((line for line in str(failure.get("reason", "")).splitlines() if line.strip()), "no reason given")
    return f"at {failure.get('time')}, at '{failure.get('step')}': {reason}"


def _applied(last: dict) -> dict | None:
    """The status view of the host's newest apply/rollback entry (only given when its chain verifies)."""
    entry = last["entry"]
    if not entry:
        return None
    return {**{k: entry.get(k) for k in ("time", "actor", "action", "result")}, "verified": last.get("chained", False)}
