"""Run a standard-library-only module's `dispatch` on a host: in-process for the local host, one
SSH round trip (the module's source piped to the host's python3) for the others."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from types import ModuleType

from . import facts, host_actions
from .renderers import Target


class HostUnreachable(Exception):
    pass


def run_on_host(target: Target, module: ModuleType, request: dict) -> dict:
    if target.host.connection == "local":
        return module.dispatch(request)
    source = Path(module.__file__).read_text(encoding="utf-8")
    command = ssh_command(target, ["python3", "-c", _quote_for_remote_shell(source)])
    result = subprocess.run(
        command, input=json.dumps(request) + "\n", capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise HostUnreachable(f"{target.host.name}: {result.stderr.strip() or 'ssh failed'}")
    return json.loads(result.stdout)


def ssh_command(target: Target, remote: list[str]) -> list[str]:
    """`ssh ... host <remote>`: `remote` is one shell command line on the host, quoted by the caller."""
    host = target.host
    destination = f"{host.ssh_user}@{host.address}" if host.ssh_user else host.address
    return [
        "ssh",
        *(["-F", host.ssh_config] if host.ssh_config else []),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-p",
        str(host.ssh_port),
        destination,
        *remote,
    ]


def run_engine_module(target: Target, module: str, arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m assistantctl.engine.<module> ...` with the interpreter the host's live engine runs
    (read from the live release's supervisor program: after the controller's code changed, the host
    still runs the runtime of its last apply), in a local process or over SSH."""
    tail = [f"assistantctl.engine.{module}", *arguments]
    if target.host.connection == "local":
        return subprocess.run([target.python, "-m", *tail], capture_output=True, text=True, timeout=60, check=False)
    program = shlex.quote(f"{target.root}/current/supervisor/programs/engine.conf")
    script = (
        rf"live=$(sed -n 's/^command=\([^ ]*\) -m assistantctl\.engine .*/\1/p' {program} 2>/dev/null); "
        f'exec "${{live:-{target.python}}}" -m {" ".join(shlex.quote(word) for word in tail)}'
    )
    return subprocess.run(ssh_command(target, [script]), capture_output=True, text=True, timeout=60, check=False)


def fetch_facts(target: Target, with_content: tuple[str, ...] = (), status: bool = False) -> dict:
    """What is live on the host; `status` adds program states and the engine's health."""
    request: dict = {"root": target.root, "with_content": list(with_content)}
    if status:
        request["status"] = {"python": target.python, "engine_port": target.spec.deploy.ports.engine}
    return run_on_host(target, facts, request)


def host_action(target: Target, action: str, **arguments: object) -> dict:
    return run_on_host(target, host_actions, {"action": action, "root": target.root, **arguments})


def _quote_for_remote_shell(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
