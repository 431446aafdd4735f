"""`python -m assistantctl.engine.keys_cli --settings PATH create|list|revoke ...`: manage API keys.

Runs on the host (the controller's `assistantctl keys` starts it there, locally or over SSH), reads
the engine's own settings and secrets to find the key table, and prints one JSON object. The new
key itself appears only in `create`'s output; nothing keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from .. import storage
from ..settings import load_secrets, load_settings
from .keys import SCOPES, KeyStore

_USER = re.compile(r"^[\w.@+:-]{1,128}$")


async def _run(args: argparse.Namespace) -> dict:
    settings = load_settings(args.settings)
    store: KeyStore = storage.keys(settings, load_secrets(settings))
    await store.table.open()
    try:
        if args.command == "create":
            scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
            expires = args.expires_at
            key, record = await store.create(args.user, scopes, args.name, expires)
            return {"key": key, "record": record.public()}
        if args.command == "revoke":
            return {"revoked": await store.revoke(args.id), "id": args.id}
        return {"keys": [k.public() for k in await store.list()]}
    finally:
        await store.table.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assistantctl.engine.keys_cli")
    parser.add_argument("--settings", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create")
    create.add_argument("--user", required=True)
    create.add_argument("--scopes", default="chat,history", help=f"comma-separated, of {', '.join(SCOPES)}")
    create.add_argument("--name", default="")
    create.add_argument("--expires-at", type=float, default=None, help="UNIX time")
    commands.add_parser("list")
    revoke = commands.add_parser("revoke")
    revoke.add_argument("id")
    args = parser.parse_args(argv)
    if args.command == "create" and not _USER.match(args.user):
        print(json.dumps({"error": "user must be 1-128 letters, digits or . @ + : - _"}))
        return 2
    try:
        result = asyncio.run(_run(args))
    except ValueError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
