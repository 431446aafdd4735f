"""Run a standard-library-only module's `dispatch` on a host: in-process for the local host, one
SSH round trip (the module's source piped to the host's python3) for the others.

Every SSH call is bounded: ssh gives up connecting after deploy.connect_timeout_seconds, and the
whole command after COMMAND_SECONDS more. A host that cannot be reached raises HostUnreachable,
whose message is one line naming the host and the cause, never ssh's command line (which holds
the module's source).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from types import ModuleType

from . import facts, host_actions
from .renderers import Target

COMMAND_SECONDS = 60  # once connected: facts with service states take up to ~25 s on a busy host


class HostUnreachable(Exception):
    """`target` could not be reached, or its python3 gave no answer; str(): "name (address): cause"."""

    def __init__(self, target: Target, cause: str):
        super().__init__(f"{target.host.name} ({target.host.address}): {cause}")
        self.host = target.host.name
        self.cause = cause


def run_on_host(target: Target, module: ModuleType, request: dict) -> dict:
    if target.host.connection == "local":
        return module.dispatch(request)
    source = Path(module.__file__).read_text(encoding="utf-8")
    result = _ssh(target, ["python3", "-c", _quote_for_remote_shell(source)], json.dumps(request) + "\n")
    if result.returncode != 0:
        cause = f"python3 on the host failed (rc {result.returncode}): {_last_line(result.stderr)}"
        raise HostUnreachable(target, cause)
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise HostUnreachable(target, f"python3 on the host answered no JSON: {_last_line(result.stdout)}") from None


def _ssh(target: Target, remote: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `remote` over SSH within the time limits; ssh's own failures raise HostUnreachable."""
    limit = target.spec.deploy.connect_timeout_seconds + COMMAND_SECONDS
    try:
        result = subprocess.run(
            ssh_command(target, remote), input=stdin, capture_output=True, text=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        # `from None`: the expired command's text is ssh's argv, the module's whole source
        raise HostUnreachable(target, f"ssh: no answer within {limit} s") from None
    if result.returncode == 255:  # ssh's own failures; the remote command's exit codes are its own
        raise HostUnreachable(target, _ssh_cause(result.stderr, target.spec.deploy.connect_timeout_seconds))
    return result


def _ssh_cause(stderr: str, connect_timeout: int) -> str:
    """ssh's reason in a few words: "connect timed out after 10 s", "Connection refused"..."""
    last = _last_line(stderr, skip="Warning: Permanently added")
    if "timed out" in last.lower():
        return f"ssh: connect timed out after {connect_timeout} s"
    return "ssh: " + re.sub(r"^ssh: connect to host \S+ port \d+: ", "", last)


def _last_line(text: str, skip: str | None = None) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not (skip and line.startswith(skip))]
    return lines[-1] if lines else "no output"


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
        "-o",
        f"ConnectTimeout={target.spec.deploy.connect_timeout_seconds}",
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
    try:
        return _ssh(target, [script])
    except HostUnreachable as exc:
        # callers read the process's answer: give them ssh's failure as its one-line stderr
        return subprocess.CompletedProcess([script], 255, "", str(exc))


def fetch_facts(target: Target, with_content: tuple[str, ...] = (), status: bool = False) -> dict:
    """What is live on the host; `status` adds program states and the engine's health."""
    request: dict = {"root": target.root, "with_content": list(with_content)}
    if status:
        request["status"] = {"python": target.python, "engine_port": target.spec.deploy.ports.engine}
    if target.has_role("monitoring") and target.spec.monitoring.alertmanager.enabled:
        request["alertmanager"] = True  # its version decides the config's keys (renderers/alertmanager.py)
    return run_on_host(target, facts, request)


def host_action(target: Target, action: str, **arguments: object) -> dict:
    return run_on_host(target, host_actions, {"action": action, "root": target.root, **arguments})


def _quote_for_remote_shell(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
