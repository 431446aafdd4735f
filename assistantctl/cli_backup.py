"""`backup` and `restore`: a host's history, API keys and audit log, checked before and after a restore.

The host side is host_backup.py (sent to the host like host_actions.py); a PostgreSQL history is
dumped and loaded from this controller (backup_pg.py).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import click

from .cli_common import fail, load, targets


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _dsn(spec, spec_path: str) -> str | None:
    """The PostgreSQL history's DSN when the spec puts the history there, else None."""
    from .schema.secrets import SecretUnavailable, resolve_secret

    state = spec.deploy.state
    if state.history != "postgres":
        return None
    try:
        return resolve_secret(state.postgres_dsn, Path(spec_path).resolve().parent)
    except SecretUnavailable as exc:
        fail(f"cannot resolve deploy.state.postgres_dsn: {exc}")


def _audit(action: str, spec_path: str, target, impact: dict, result: str, changed: bool = True) -> None:
    """On the controller, and on the host when it was `changed` (a refused restore left it as it was)."""
    from .cli_hosts import _audit as audit  # late: cli_hosts imports this module

    audit(action, spec_path, [target.host.name], impact, result, [target] if changed else [])


@click.command()
@click.option("--host", "--limit", "hosts", help="Comma-separated hosts (default: all).")
@click.option("--out", "out", default="backups", show_default=True, type=click.Path(file_okay=False))
@click.pass_obj
def backup(spec_path: str, hosts: str | None, out: str) -> None:
    """Save each host's history and API-key databases (a pg_dump with a PostgreSQL history) and audit
    log, no secrets, with a manifest of their SHA-256 sums, to OUT/<host>-<time>.tar.gz (0600)."""
    from importlib.metadata import version

    from . import backup_pg, host_backup
    from .remote import HostUnreachable, run_on_host

    spec = load(spec_path)
    dsn = _dsn(spec, spec_path)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    stamp, meta = _stamp(), {"assistantctl_version": version("assistantctl")}
    for target in targets(spec, spec_path, hosts):
        request = {"action": "backup", "root": target.root, "meta": {**meta, "host": target.host.name}}
        try:
            archive = base64.b64decode(run_on_host(target, host_backup, request)["archive"])
            if dsn is not None:
                archive = backup_pg.with_dump(archive, dsn)
        except (HostUnreachable, backup_pg.PgFailed) as exc:
            fail(str(exc))
        path = folder / f"{target.host.name}-{stamp}.tar.gz"
        path.touch(mode=0o600)
        path.write_bytes(archive)
        click.echo(f"{target.host.name}: {path} ({len(archive)} bytes)")
        _audit("backup", spec_path, target, {"archive": path.name}, "complete")


@click.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "--limit", "hosts", required=True, help="The host to restore onto.")
@click.option("--health-timeout", default=20.0, show_default=True, help="Seconds the engine has to answer /health.")
@click.pass_obj
def restore(spec_path: str, archive: str, hosts: str, health_timeout: float) -> None:
    """Put a backup's history and API keys back on a host (apply the spec there first).

    The archive is checked first (manifest, SHA-256 sums, SQLite integrity, the engine's tables) and
    refused, with nothing touched, when anything is wrong. What it replaces is kept as a safety copy;
    when the engine is not healthy afterwards the safety copy goes back and restore exits 1.
    """
    from . import backup_pg, host_backup
    from .locking import Locked, locked
    from .remote import HostUnreachable, run_on_host

    spec = load(spec_path)
    chosen = targets(spec, spec_path, hosts)
    if len(chosen) != 1:
        raise click.UsageError("restore goes to one host at a time")
    [target] = chosen
    name, dsn, data = target.host.name, _dsn(spec, spec_path), Path(archive).read_bytes()
    impact = {"archive": Path(archive).name}

    def engine(op: str) -> dict:
        request = {"action": "engine", "root": target.root, "python": target.python, "op": op}
        return run_on_host(target, host_backup, {**request, "timeout": health_timeout})

    try:
        with locked(chosen, "restore"):
            if dsn is not None:
                safety = Path(archive).resolve().parent / f"{name}-before-restore-{_stamp()}.dump"
                echo = lambda line: click.echo(f"{name}: {line}")  # noqa: E731
                answer = {"problem": backup_pg.restore(data, dsn, safety, engine, echo), "restored": ["postgres"]}
            else:
                payload = base64.b64encode(data).decode()
                request = {"action": "restore", "root": target.root, "archive": payload, "python": target.python}
                answer = run_on_host(target, host_backup, {**request, "timeout": health_timeout})
    except host_backup.BadArchive as exc:
        answer = {"refused": str(exc)}
    except (Locked, HostUnreachable, backup_pg.PgFailed) as exc:
        _audit("restore", spec_path, target, impact, f"failed: {exc}", changed=False)
        fail(str(exc))
    if "refused" in answer:
        _audit("restore", spec_path, target, impact, f"refused: {answer['refused']}", changed=False)
        fail(f"{name}: refused {Path(archive).name}: {answer['refused']}; nothing was changed")
    for path in answer.get("safety", []):
        click.echo(f"{name}: safety copy: {path}")
    if answer["problem"]:
        _audit("restore", spec_path, target, impact, f"rolled back: {answer['problem']}")
        after = f" (and after it: {answer['after_rollback']})" if answer.get("after_rollback") else ""
        fail(f"{name}: {answer['problem']}; rolled back to the safety copy{after}")
    restored = ", ".join(answer["restored"]) or "nothing (the archive holds no history)"
    click.echo(f"{name}: restored {restored}")
    _audit("restore", spec_path, target, impact, "complete")
