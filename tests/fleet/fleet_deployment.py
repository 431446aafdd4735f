"""A spec deployed to the test fleet: run assistantctl against it and read each host's files."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from assistantctl.runtime import Runtime, interpreter_needs, runtime_for
from cli_helpers import assistantctl, default_spec, write_spec
from hosts import Fleet, TestHost

# What facts report of a host's python3: the hosts share this machine's files, and their ssh
# sessions find the python3 this process finds (root's shell start-up sets the same PATH).
_PYTHON_FACTS = (
    "import json, platform, sys; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
    "'full_version': platform.python_version(), 'machine': platform.machine(), 'glibc': platform.libc_ver()[1]}))"
)


@functools.cache
def hosts_python() -> dict:
    return json.loads(subprocess.run(["python3", "-c", _PYTHON_FACTS], capture_output=True, check=True).stdout)


def hosts_runtime(needs: tuple = ()) -> Runtime:
    """The runtime apply installs on the test hosts: the controller's, extended by `needs` and by
    what the engine's dependencies need on the hosts' python3 (nothing when it is the controller's
    own version; Debian's 3.11.2 would add redis's async-timeout)."""
    return runtime_for([*needs, *interpreter_needs(hosts_python())], hosts_python())


# The tasks of apply's first play, which prepares every host before any of them switches.
PREPARING = ("Create the deploy directories", "Install what the services need", "Install missing Debian packages")


def steps_on(host: str, output: str) -> list[str]:
    """The tasks the progress lines of an apply show for one host, in order."""
    return re.findall(rf"^  \[{re.escape(host)}\] \w+ +(.*)$", output, re.M)


def only_prepared(host: str, output: str) -> bool:
    """The host went through the preparing play but the rollout stopped before its turn."""
    steps = steps_on(host, output)
    return bool(steps) and all(step.startswith(PREPARING) for step in steps)


class FleetDeployment:
    """A spec whose hosts are the fleet's, and the CLI run against it."""

    def __init__(
        self,
        fleet: Fleet,
        folder: Path,
        roles: dict[str, list[str]],
        env: dict[str, str] | None = None,
        python: str | None = sys.executable,
        **deploy: object,
    ):
        """`python`: the interpreter hosts run the engine with; None has apply install its own
        virtualenv on each host (tests that don't exercise that save the install time)."""
        self.fleet = fleet
        self.folder = folder
        # What `${env:...}` secrets of the spec resolve against; the edges' shared secret is always one.
        self.env = {"EDGE_SECRET": "fleet-edge-secret", **(env or {})}
        self.data = default_spec()
        self.data.setdefault("security", {})["edge_secret"] = "${env:EDGE_SECRET}"
        self.data["deploy"] = {
            "root": fleet.root,
            "serial": 1,
            "hosts": [
                {
                    "name": host.name,
                    "address": host.address,
                    "connection": "ssh",
                    "ssh_user": "root",
                    "ssh_config": str(fleet.ssh_config),
                    "roles": roles[host.name],
                    **({"python": python} if python else {}),
                }
                for host in fleet.hosts
            ],
            **deploy,
        }
        self.spec = write_spec(folder, self.data)

    def host(self, name: str) -> TestHost:
        return next(h for h in self.fleet.hosts if h.name == name)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return assistantctl(self.spec, *args, env=self.env)

    def timed(self, *args: str) -> tuple[subprocess.CompletedProcess, float]:
        start = time.monotonic()
        result = self.run(*args)
        return result, time.monotonic() - start

    def rewrite(self, data: dict) -> None:
        self.data = data
        write_spec(self.folder, data)

    def copy(self) -> dict:
        return json.loads(json.dumps(self.data))

    def url(self, name: str, path: str = "", port: int | None = None) -> str:
        port = port or self.data["deploy"].get("ports", {}).get("http", 8080)
        return f"http://{self.host(name).address}:{port}{path}"

    def live_release(self, name: str) -> str | None:
        link = self.host(name).files / "current"
        return link.readlink().name if link.is_symlink() else None

    def releases(self, name: str) -> set[str]:
        return {p.name for p in (self.host(name).files / "releases").iterdir()}

    def pid_files(self, name: str) -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in (self.host(name).files / "run").glob("*.pid")}
