"""Read a host's facts: in-process for the local host, one SSH round trip for the others."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from . import facts
from .renderers import Target


class HostUnreachable(Exception):
    pass


def fetch_facts(target: Target, with_content: tuple[str, ...] = ()) -> dict:
    if target.host.connection == "local":
        return facts.collect(target.root, with_content)
    request = json.dumps({"root": target.root, "with_content": list(with_content)})
    source = Path(facts.__file__).read_text(encoding="utf-8")
    host = target.host
    destination = f"{host.ssh_user}@{host.address}" if host.ssh_user else host.address
    command = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-p",
        str(host.ssh_port),
        destination,
        "python3",
        "-c",
        _quote_for_remote_shell(source),
    ]
    result = subprocess.run(command, input=request + "\n", capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise HostUnreachable(f"{host.name}: {result.stderr.strip() or 'ssh failed'}")
    return json.loads(result.stdout)


def _quote_for_remote_shell(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
