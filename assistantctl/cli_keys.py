"""`assistantctl keys create | list | revoke`: the API keys of a deployment.

Keys live where the engine keeps its history (engine/security/keys.py): in PostgreSQL every engine node
shares them; with SQLite each host has its own, so a spec with several engine hosts names one with
`--host`. The commands run the engine's own `keys_cli` on that host, locally or over SSH, so a key
is written exactly as the engine reads it. A new key is printed once and kept nowhere.
"""

from __future__ import annotations

import json
import re
import time

import click

from .cli_common import fail, load, targets

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _target(spec_path: str, host: str | None):
    spec = load(spec_path)
    engines = [t for t in targets(spec, spec_path, host) if t.has_role("engine")]
    if not engines:
        fail(f"no host with the engine role{' named ' + host if host else ''}")
    if len(engines) > 1 and spec.deploy.state.history == "sqlite":
        fail(
            "each engine host keeps its own keys with SQLite history: pick one with --host "
            "(or share them: deploy.state.history: postgres)"
        )
    return engines[0]


def _run(target, arguments: list[str]) -> dict:
    from .remote import run_engine_module

    settings = f"{target.root}/current/engine/settings.json"
    result = run_engine_module(target, "keys_cli", ["--settings", settings, *arguments])
    try:
        output = json.loads(result.stdout)
    except ValueError:
        fail(f"{target.host.name}: {result.stderr.strip() or 'no answer'} (has `apply` run on this host?)")
    if result.returncode != 0:
        fail(f"{target.host.name}: {output.get('error', 'failed')}")
    return output


def _seconds(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter("a duration like 3600, 90m, 12h or 30d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _audit(action: str, spec_path: str, target, **extra) -> None:
    from .cli_hosts import _audit as audit

    audit(action, spec_path, [target.host.name], {}, "complete", **extra)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (Authorization: Bearer sk-ast-...)."""


@keys.command()
@click.argument("user")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    default=("chat", "history"),
    show_default=True,
    type=click.Choice(["chat", "history", "admin"]),
    help="Repeat for several.",
)
@click.option("--expires-in", help="Lifetime, e.g. 90m, 12h, 30d (default: until revoked).")
@click.option("--name", default="", help="A note to recognise the key by in `keys list`.")
@click.option("--host", "host", help="The engine host (needed with SQLite history and several engine hosts).")
@click.pass_obj
def create(spec_path: str, user: str, scopes: tuple[str, ...], expires_in: str | None, name: str, host) -> None:
    """Make a key for USER and print it once; only its hash is stored."""
    target = _target(spec_path, host)
    arguments = ["create", "--user", user, "--scopes", ",".join(scopes), "--name", name]
    if expires_in:
        arguments += ["--expires-at", str(time.time() + _seconds(expires_in))]
    output = _run(target, arguments)
    record = output["record"]
    _audit("keys.create", spec_path, target, key_id=record["id"], user=user, scopes=list(scopes))
    click.echo(output["key"])
    expires = record["expires_at"]
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires)) if expires else "revoked"
    click.echo(
        f"key {record['id']} for {user} ({', '.join(record['scopes'])}) on {target.host.name}, valid until {until}. "
        "It is shown this once.",
        err=True,
    )


@keys.command(name="list")
@click.option("--host", "host", help="The engine host.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_keys(spec_path: str, host: str | None, as_json: bool) -> None:
    """Every key: id, user, scopes, state. Never the key itself."""
    target = _target(spec_path, host)
    records = _run(target, ["list"])["keys"]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    now = time.time()
    for r in records:
        expired = r["expires_at"] is not None and r["expires_at"] <= now
        state = "revoked" if r["revoked_at"] else ("expired" if expired else "active")
        click.echo(f"{r['id']}  {r['user']:<24} {','.join(r['scopes']):<20} {state:<8} {r['name']}")
    if not records:
        click.echo("no keys", err=True)


@keys.command()
@click.argument("key_id")
@click.option("--host", "host", help="The engine host.")
@click.pass_obj
def revoke(spec_path: str, key_id: str, host: str | None) -> None:
    """Revoke a key; every engine worker refuses it within a second."""
    target = _target(spec_path, host)
    output = _run(target, ["revoke", key_id])
    if not output["revoked"]:
        fail(f"no active key {key_id} on {target.host.name}")
    _audit("keys.revoke", spec_path, target, key_id=key_id)
    click.echo(f"revoked {key_id}")
