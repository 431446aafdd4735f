"""`assistantctl retire NAME`: remove what assistantctl put on a host that left the spec."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import fail, load, targets


def departed_hosts(spec, spec_path: str) -> list:
    """The places this controller deployed to that no host of the spec targets any more."""
    from .departed import departed

    try:
        return departed(Path(spec_path), targets(spec, spec_path, None))
    except ValueError as exc:
        fail(str(exc))


@click.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Remove the data and logs (history, audit log) too.")
@click.option("--auto-approve", is_flag=True, help="Retire without asking (needed off a terminal).")
@click.pass_obj
def retire(spec_path: str, name: str, purge: bool, auto_approve: bool) -> None:
    """Stop the services of a host that left the spec and remove its releases and runtimes.

    `plan` lists such hosts. The host's data/ (history) and logs/ (with its audit log) stay
    unless --purge. A host still in the spec is refused: remove it from deploy.hosts first.
    """
    from .cli_hosts import _audit
    from .departed import forget
    from .locking import Locked, locked
    from .remote import HostUnreachable, host_action

    spec = load(spec_path)
    if any(host.name == name for host in spec.deploy.hosts):
        found = [d for d in departed_hosts(spec, spec_path) if d.name == name]
        if not found:
            fail(f"{name} is in the spec: remove it from deploy.hosts first (`plan` then lists it)")
    else:
        found = [d for d in departed_hosts(spec, spec_path) if d.name == name]
    if not found:
        fail(f"no host named {name} left the spec (`plan` lists those that did)")
    gone = found[0]
    if len(found) > 1:
        fail(f"several places named {name} left the spec: {', '.join(d.describe() for d in found)}")
    what = "everything under its root" if purge else "its releases, runtimes and services (data/ and logs/ stay)"
    click.echo(f"retire {gone.describe()}: stop and remove {what}")
    if not auto_approve:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            fail("retire removes a deployment: pass --auto-approve to confirm off a terminal")
        if click.prompt(f"Type the host's name ({name}) to confirm", default="", show_default=False) != name:
            fail("retire cancelled; nothing changed")
    target = gone.target(spec)
    try:
        with locked([target], "retire", spec_path=Path(spec_path)):
            answer = host_action(target, "retire", purge=purge)
        if purge and answer.get("ok"):
            host_action(target, "rmdir_root")
    except (Locked, HostUnreachable) as exc:
        _audit("retire", spec_path, [name], {}, f"refused: {exc}")
        fail(str(exc))
    if not answer.get("ok"):
        _audit("retire", spec_path, [name], {}, f"failed: {answer['error']}", [target])
        fail(f"{name}: {answer['error']}")
    forget(Path(spec_path), gone)
    _audit("retire", spec_path, [name], {}, "complete", [] if purge else [target], root=gone.root)
    stopped = "services stopped; " if answer["stopped"] else "nothing was running; "
    kept = f"; kept {', '.join(answer['kept'])}" if answer["kept"] else ""
    click.echo(f"{name}: retired: {stopped}removed {', '.join(answer['removed']) or 'nothing'}{kept}")
