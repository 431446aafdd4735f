"""Run the apply playbook for the hosts whose plan has changes, and read back what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from .plan import HostPlan


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    release: str
    message: str


def release_name(plan: HostPlan) -> str:
    """Release folders carry the bundle id and the (controller's) UTC time of the apply."""
    return f"{plan.bundle.id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def run_apply(
    plans: list[HostPlan], echo: Callable[[str], None] = print, workdir: Path | None = None
) -> list[HostResult]:
    """Apply every plan that has changes; returns one result per such host."""
    changing = [p for p in plans if p.has_changes]
    if not changing:
        return []
    with tempfile.TemporaryDirectory(prefix="assistantctl-apply-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        inventory, releases = _inventory(changing, tmpdir)
        inventory_path = tmpdir / "inventory.yml"
        inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=True))
        output = _run_playbook(inventory_path, echo)
    return _results(output, changing, releases)


def _inventory(plans: list[HostPlan], tmpdir: Path) -> tuple[dict, dict[str, str]]:
    hosts, releases = {}, {}
    for plan in plans:
        target = plan.target
        host = target.host
        bundle_path = tmpdir / f"{host.name}.tar.gz"
        bundle_path.write_bytes(plan.bundle.tarball())
        os.chmod(bundle_path, 0o600)
        releases[host.name] = release_name(plan)
        vars_ = {
            "ansible_host": host.address,
            "assistant_root": target.root,
            "assistant_release": releases[host.name],
            "assistant_bundle": str(bundle_path),
            "assistant_python": target.python,
            "assistant_roles": list(host.roles),
            "assistant_changed_services": plan.changed_services,
            "assistant_engine_port": target.spec.deploy.ports.engine,
            "assistant_http_port": target.spec.deploy.ports.http,
            "assistant_checks": [
                {"folder": folder, "command": command.replace("{root}", target.root).replace("{python}", target.python)}
                for folder, command in plan.bundle.checks
            ],
        }
        if host.connection == "local":
            vars_.update(ansible_connection="local", ansible_python_interpreter=sys.executable)
        else:
            vars_.update(
                ansible_connection="ssh",
                ansible_user=host.ssh_user,
                ansible_port=host.ssh_port,
                ansible_python_interpreter="python3",
            )
        hosts[host.name] = vars_
    return {"all": {"hosts": hosts, "vars": {"assistant_serial": plans[0].target.spec.deploy.serial}}}, releases


def _run_playbook(inventory: Path, echo: Callable[[str], None]) -> dict:
    """Run apply.yml, streaming its progress lines to `echo`; returns the callback's result file."""
    playbooks = files("assistantctl.playbooks")
    result_file = inventory.parent / "result.json"
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "assistant_progress",
        "ANSIBLE_CALLBACK_PLUGINS": str(playbooks / "callback_plugins"),
        "ASSISTANT_RESULT_FILE": str(result_file),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SSH_PIPELINING": "True",
    }
    command = [sys.executable, "-m", "ansible", "playbook", "-i", str(inventory), str(playbooks / "apply.yml")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        output = []
        for line in proc.stdout:
            output.append(line)
            if line.startswith("  ["):
                echo(line.rstrip("\n"))
    if not result_file.exists():
        raise RuntimeError(f"ansible-playbook stopped before any host ran (rc {proc.returncode}):\n{''.join(output)}")
    return json.loads(result_file.read_text())


def _results(output: dict, plans: list[HostPlan], releases: dict[str, str]) -> list[HostResult]:
    stats, failures = output.get("stats", {}), output.get("failures", {})
    results = []
    for plan in plans:
        host = plan.host
        s = stats.get(host, {})
        ok = bool(s) and not s.get("failures") and not s.get("unreachable")
        causes = failures.get(host)
        message = "applied" if ok else ("\n  ".join(causes) if causes else "did not run (an earlier host failed)")
        results.append(HostResult(host, ok, releases[host], message))
    return results
