"""`assistantctl audit verify`: check the hash chain of the controller's audit log and every host's."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import EXIT_ERROR, load, targets


@click.group()
def audit() -> None:
    """The audit log of every run, on the controller and on the hosts."""


@audit.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.pass_obj
def verify(spec_path: str, hosts: str | None) -> None:
    """Check each log's chain: edited, deleted, reordered or inserted entries and cut-off tails.

    Exit 1 with one line per problem (FILE:LINE: what), 0 with a summary. Lines written before the
    log was chained are counted as unchained, not as tampering.
    """
    from .audit import CONTROLLER_LOG, host_anchors, verify_controller
    from .remote import HostUnreachable, host_action

    spec = load(spec_path)
    anchors = host_anchors(Path(spec_path))
    problems, summaries, controller_heads = [], [], {}
    for target in targets(spec, spec_path, hosts):
        name, where = target.host.name, f"{target.host.name}:{target.root}/logs/audit.log"
        try:
            answer = host_action(target, "verify_audit", anchors=anchors.get(name, []))
        except HostUnreachable as exc:
            problems.append(f"{where}: not verified: {exc}")
            continue
        problems += [f"{where}:{line}: {message}" for line, message in answer["problems"]]
        controller_heads[name] = answer["controller_heads"]
        summaries.append(_summary(where, answer))
    log = Path(spec_path).resolve().parent / CONTROLLER_LOG
    mine = verify_controller(Path(spec_path), controller_heads)
    problems = [f"{log}:{line}: {message}" for line, message in mine["problems"]] + problems
    if problems:
        for problem in problems:
            click.echo(problem)
        click.echo(f"audit verify: {len(problems)} problem(s)", err=True)
        sys.exit(EXIT_ERROR)
    for summary in [_summary(str(log), mine), *summaries]:
        click.echo(summary)
    click.echo("audit verify: every chain verifies")


def _summary(where: str, result: dict) -> str:
    unchained = f", {result['unchained']} unchained line(s) from before the chain" if result["unchained"] else ""
    return f"{where}: {result['chained']} chained entries, ok{unchained}"
