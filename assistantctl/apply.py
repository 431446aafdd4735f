"""Run our playbooks (apply, rollback) for a set of hosts, and read back what happened."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from . import runtime
from .engine.settings import BUILTIN_TOOLS
from .plan import HostPlan
from .renderers import Target, elk, keepalived, supervisor
from .renderers.engine import workspaces_dir
from .scratch import private_workdir
from .targets import target_runtime


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
    # the bundles hold secrets: a private folder, removed on every way out (see scratch.py)
    with private_workdir("apply", workdir) as tmpdir:
        releases = {p.host: release_name(p) for p in changing}
        for plan in changing:
            if plan.install_runtime:
                echo(f"  [{plan.host}] wheelhouse for engine runtime {plan.target.runtime} (built once per version)")
        hosts = {
            p.host: {**host_vars(p.target), **_bundle_vars(p, releases[p.host], tmpdir), **_local_tmp(p.target, tmpdir)}
            for p in changing
        }
        output = run_playbook("apply.yml", _write_inventory(hosts, changing[0].target, tmpdir), echo)
    return _results(output, [p.host for p in changing], releases)


def run_rollback(
    choices: list[tuple[Target, str]], echo: Callable[[str], None] = print, workdir: Path | None = None
) -> list[HostResult]:
    """Point each target's `current` at the chosen release, reload everything, health-check."""
    with private_workdir("rollback", workdir) as tmpdir:
        hosts = {t.host.name: {**host_vars(t), "assistant_release": release} for t, release in choices}
        output = run_playbook("rollback.yml", _write_inventory(hosts, choices[0][0], tmpdir), echo)
    return _results(output, [t.host.name for t, _ in choices], {t.host.name: r for t, r in choices})


def host_vars(target: Target) -> dict:
    """Inventory variables every play needs: how to reach the host and where the deployment lives."""
    host = target.host
    values = {
        "ansible_host": host.address,
        "assistant_root": target.root,
        "assistant_python": target.python,
        "assistant_roles": list(host.roles),
        "assistant_engine_port": target.spec.deploy.ports.engine,
        "assistant_http_port": target.spec.deploy.ports.http,
        "assistant_health_retries": target.spec.deploy.health_check_seconds,  # one try a second
    }
    pair = ha_pair(target)
    if pair is not None:
        values["assistant_ha"] = pair
    if machine_tools_on(target):
        values["assistant_workspaces"] = workspaces_dir(target)
    if host.connection == "local":
        values.update(ansible_connection="local", ansible_python_interpreter=sys.executable)
    else:
        values.update(
            ansible_connection="ssh",
            ansible_user=host.ssh_user,
            ansible_port=host.ssh_port,
            ansible_python_interpreter="python3",
            assistant_host_python="python3",
            # The spec's connect timeout for Ansible's own connections too, not only plan's.
            ansible_ssh_timeout=target.spec.deploy.connect_timeout_seconds,
        )
        if host.ssh_config:
            values["ansible_ssh_common_args"] = f"-F {shlex.quote(host.ssh_config)}"
        # the local machine gets its packages from `scripts/system-packages` (make run)
        values["assistant_packages"] = debian_packages(target)
        values["assistant_vendor_repos"] = vendor_repos(target)
    return values


def ha_pair(target: Target) -> dict | None:
    """What tasks/drain.yml needs to hand the virtual IP to the other host of deploy.ha and take
    it back: None on a host outside the pair."""
    ha = target.spec.deploy.ha
    if ha is None or target.host.name not in ha.hosts:
        return None
    _, peer = keepalived.peers(target)
    return {
        "peer": peer.name,
        "peer_health": f"http://{peer.address}:{keepalived.served_port(target.spec, peer)}/health",
        "virtual_ip_health": f"http://{ha.virtual_ip}:{keepalived.served_port(target.spec, target.host)}/health",
        "notify_log": target.path("logs", keepalived.NOTIFY_LOG),
    }


def machine_tools_on(target: Target) -> bool:
    """Whether this host's engine enables a tool that runs in the sandbox (risk class machine)."""
    return target.has_role("engine") and any(BUILTIN_TOOLS[name] == "machine" for name in target.spec.tools.active)


def debian_packages(target: Target) -> list[str]:
    """The Debian packages behind the programs this host runs."""
    spec, host = target.spec, target.host
    wanted = {
        "nginx": target.has_role("edge"),
        "keepalived": spec.deploy.ha is not None and host.name in spec.deploy.ha.hosts,
        "prometheus": target.has_role("monitoring") and spec.monitoring.prometheus.enabled,
        "prometheus-alertmanager": target.has_role("monitoring") and spec.monitoring.alertmanager.enabled,
        "prometheus-node-exporter": supervisor.scraped_by_prometheus(target),
        "python3-venv": target.runtime is not None,  # Debian's python3 makes virtualenvs only with it
        "bubblewrap": machine_tools_on(target),  # the machine tools' sandbox (engine/tools/sandbox.py)
        "patch": machine_tools_on(target) and "workspace_patch" in spec.tools.active,
        "chromium": target.has_role("engine") and "browser" in spec.tools.active,  # Playwright drives it
        # from the vendors' APT repositories (vendor_repos below)
        "grafana": grafana_on(target),
        "filebeat": spec.monitoring.logging.elk.enabled,
        "logstash": spec.monitoring.logging.elk.enabled and elk.runs_logstash(target),
    }
    return sorted(name for name, needed in wanted.items() if needed)


def grafana_on(target: Target) -> bool:
    return target.has_role("monitoring") and target.spec.monitoring.grafana.enabled


def vendor_repos(target: Target) -> list[str]:
    """The vendors' APT repositories (playbooks/vars/services.yml `vendor_repos`) this host's
    packages come from: Grafana's for Grafana, Elastic's 8.x for Filebeat and Logstash."""
    wanted = {"grafana": grafana_on(target), "elastic": target.spec.monitoring.logging.elk.enabled}
    return sorted(name for name, needed in wanted.items() if needed)


def _bundle_vars(plan: HostPlan, release: str, tmpdir: Path) -> dict:
    target = plan.target
    bundle_path = tmpdir / f"{plan.host}.tar.gz"
    bundle_path.write_bytes(plan.bundle.tarball())
    os.chmod(bundle_path, 0o600)
    values = {
        "assistant_release": release,
        "assistant_bundle": str(bundle_path),
        "assistant_changed_services": plan.changed_services,
        "assistant_repair": repair_vars(plan),
        "assistant_checks": [
            {"folder": folder, "command": command.replace("{root}", target.root).replace("{python}", target.python)}
            for folder, command in plan.bundle.checks
        ],
    }
    # Test-only: tests/test_failure_matrix.py fails the named step (ship, reload, health) of a real
    # apply with it; unset (always, outside that test) the playbooks never see the variable.
    if fault := os.environ.get("ASSISTANTCTL_TEST_FAULT"):
        values["assistant_fault"] = fault
    if plan.install_runtime:
        values["assistant_runtime"] = {
            "id": target.runtime,
            "wheelhouse": str(runtime.wheelhouse(target_runtime(target, plan.host_python), plan.host_python)),
        }
    return values


def repair_vars(plan: HostPlan) -> dict:
    """What playbooks/tasks/repair.yml does about the plan's running-state drift, after the services
    whose files changed were reloaded (so those are not reloaded twice)."""
    fixes: dict[str, set[str]] = {"update": set(), "start": set(), "restart": set(), "reload": set()}
    for drift in plan.running_drift:
        fixes[drift.fix].add(drift.service)
    done = set(plan.changed_services) | fixes["start"] | fixes["restart"]
    return {
        # reload.yml's `update` (when supervisor's files changed) already did it
        "update_supervisor": bool(fixes["update"]) and "supervisor" not in plan.changed_services,
        "start": sorted(fixes["start"]),
        "restart": sorted(fixes["restart"] - fixes["start"]),
        "reload": sorted(fixes["reload"] - done),
    }


def _local_tmp(target: Target, tmpdir: Path) -> dict:
    """On this machine, Ansible's copy of the bundle (unarchive ships it to the "remote" temp folder
    first) goes to the private folder too, so a killed run leaves it nowhere else."""
    return {"ansible_remote_tmp": str(tmpdir / "ansible-remote")} if target.host.connection == "local" else {}


def _write_inventory(hosts: dict[str, dict], any_target: Target, tmpdir: Path) -> Path:
    deploy = any_target.spec.deploy
    inventory = {
        "all": {
            "hosts": hosts,
            "vars": {"assistant_serial": deploy.serial, "assistant_max_fail_percentage": deploy.max_fail_percentage},
        }
    }
    path = tmpdir / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=True))
    return path


# ASSISTANTCTL_ANSIBLE_STRATEGY=linear runs the plays with Ansible's own strategy instead of Mitogen's.
STRATEGY_ENV = "ASSISTANTCTL_ANSIBLE_STRATEGY"


def _strategy() -> dict[str, str]:
    """Mitogen's linear strategy: the same plays, but every task runs in one Python process per host
    kept for the whole play, instead of a new interpreter unpacking a module for each task (~0.35 s
    a task on a 2-core machine: a first local apply took 19.0 s, 9.3 s with it)."""
    if os.environ.get(STRATEGY_ENV, "mitogen_linear") != "mitogen_linear":
        return {}
    spec = importlib.util.find_spec("ansible_mitogen")  # not imported: only ansible-playbook loads it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"mitogen is not installed (pip install mitogen), or set {STRATEGY_ENV}=linear")
    (package,) = spec.submodule_search_locations
    plugins = Path(package) / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}


def run_playbook(playbook: str, inventory: Path, echo: Callable[[str], None]) -> dict:
    """Run one of our playbooks, streaming its progress lines to `echo`; returns the callback's result."""
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
        "ANSIBLE_LOCAL_TEMP": str(inventory.parent / "ansible-local"),
        **_strategy(),
    }
    command = [sys.executable, "-m", "ansible", "playbook", "-i", str(inventory), str(playbooks / playbook)]
    # Play keywords (serial, max_fail_percentage) are templated before any host is chosen, so they
    # see extra vars but never inventory vars: pass the inventory's `all` vars both ways.
    play_vars = yaml.safe_load(inventory.read_text())["all"].get("vars", {})
    command += ["-e", json.dumps(play_vars)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        output = []
        try:
            for line in proc.stdout:
                output.append(line)
                if line.startswith("  ["):
                    echo(line.rstrip("\n"))
        except BaseException:
            # interrupted (Ctrl-C, an error in echo): stop the play now rather than wait for it to
            # end (Popen's exit waits) while this run releases its locks. A run killed outright
            # takes its play down too: the play dies on its next line of output (EPIPE).
            _stop(proc)
            raise
    if not result_file.exists():
        raise RuntimeError(f"ansible-playbook stopped before any host ran (rc {proc.returncode}):\n{''.join(output)}")
    return json.loads(result_file.read_text())


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _results(output: dict, hosts: list[str], releases: dict[str, str]) -> list[HostResult]:
    stats, failures = output.get("stats", {}), output.get("failures", {})
    plays, ran = output.get("plays", 0), output.get("ran", {})
    results = []
    for host in hosts:
        s = stats.get(host, {})
        # A host that came through the preparing play but not the rolling one was stopped by a failure elsewhere.
        ok = bool(s) and not s.get("failures") and not s.get("unreachable") and ran.get(host) == plays
        causes = failures.get(host)
        message = "applied" if ok else ("\n  ".join(causes) if causes else "did not run (an earlier host failed)")
        results.append(HostResult(host, ok, releases[host], message))
    return results
