"""An SSH host that does not answer: a bounded wait, one line naming the host and the cause, and
the other hosts still planned or shown. Also `--version`.

10.255.255.1 gets no answer from this machine kind (ssh waits until its ConnectTimeout); a port
nobody listens on at 127.0.0.1 is refused at once. Both are checked, since they fail differently.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from cli_helpers import Deployment, assistantctl, write_spec

SILENT = "10.255.255.1"
SCRIPT_MARKERS = ("def dispatch", "import hashlib", "Traceback", "TimeoutExpired")


def with_ssh_host(tmp_path: Path, address: str, port: int = 22, timeout: int = 2) -> Deployment:
    """The default local deployment plus an SSH monitoring host at `address` (a second engine
    would need a shared history, an edge-only host an edge secret)."""
    deployment = Deployment(tmp_path)
    data = deployment.data
    data["deploy"]["connect_timeout_seconds"] = timeout
    data["deploy"]["hosts"].append(
        {
            "name": "edge-2",
            "address": address,
            "connection": "ssh",
            "ssh_port": port,
            "roles": ["monitoring"],
            "python": "/usr/bin/python3",
        }
    )
    deployment.rewrite(data)
    return deployment


def assert_one_clean_line(text: str) -> None:
    for marker in SCRIPT_MARKERS:
        assert marker not in text, f"{marker!r} leaked into the output:\n{text}"


def test_plan_lists_a_silent_host_with_its_cause_and_still_plans_the_others(tmp_path):
    deployment = with_ssh_host(tmp_path, SILENT, timeout=2)
    result = deployment.run("plan")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "host local (127.0.0.1)" in result.stdout, "the reachable host is still planned"
    assert f"edge-2 ({SILENT}): ssh: connect timed out after 2 s" in result.stdout + result.stderr
    assert_one_clean_line(result.stdout + result.stderr)


def test_plan_json_and_detailed_exitcode_report_the_unreachable_host(tmp_path):
    import json

    deployment = with_ssh_host(tmp_path, "127.0.0.1", port=1)
    result = deployment.run("plan", "--json", "--detailed-exitcode")
    assert result.returncode == 1, "an unreachable host is an error, not 'changes'"
    report = json.loads(result.stdout)
    assert [h["host"] for h in report["hosts"]] == ["local"]
    assert report["unreachable"] == [{"host": "edge-2", "error": "edge-2 (127.0.0.1): ssh: Connection refused"}]


def test_status_shows_the_other_hosts_and_exits_1(tmp_path):
    deployment = with_ssh_host(tmp_path, SILENT, timeout=2)
    result = deployment.run("status")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "local: release (none)" in result.stdout
    assert f"edge-2 ({SILENT}): ssh: connect timed out after 2 s" in result.stdout
    assert_one_clean_line(result.stdout + result.stderr)


def test_a_refused_connection_stops_apply_and_rollback_with_one_line(tmp_path):
    deployment = with_ssh_host(tmp_path, "127.0.0.1", port=1)
    for command in ("apply", "rollback"):
        result = deployment.run(command, "--host", "edge-2")
        assert result.returncode == 1, command
        assert result.stderr == "error: edge-2 (127.0.0.1): ssh: Connection refused\n", result.stderr
        assert_one_clean_line(result.stdout + result.stderr)


def test_the_connect_timeout_must_be_positive(tmp_path):
    data = Deployment(tmp_path).data
    data["deploy"]["connect_timeout_seconds"] = 0
    result = assistantctl(write_spec(tmp_path, data), "validate")
    assert result.returncode == 1 and "connect_timeout_seconds" in result.stderr


def test_version_prints_the_installed_version_and_the_engine_runtime(tmp_path):
    from assistantctl.runtime import controller_runtime

    result = assistantctl(tmp_path / "no-spec-needed.yaml", "--version")
    assert result.returncode == 0, result.stderr
    runtime = controller_runtime().id
    assert result.stdout == f"assistantctl {metadata.version('assistantctl')} (engine runtime {runtime})\n"


def test_ansible_connects_to_ssh_hosts_with_the_specs_timeout(tmp_path):
    """Apply's own SSH connections (Ansible's ssh plugin) wait no longer than plan's."""
    from assistantctl.apply import host_vars
    from assistantctl.schema.loader import load_spec
    from assistantctl.targets import targets

    deployment = with_ssh_host(tmp_path, SILENT, timeout=7)
    spec = load_spec(deployment.spec)
    by_name = {t.host.name: t for t in targets(spec, tmp_path, None)}
    assert host_vars(by_name["edge-2"])["ansible_ssh_timeout"] == 7
    assert "ansible_ssh_timeout" not in host_vars(by_name["local"])
