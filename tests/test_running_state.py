"""Running state is part of the truth (issue 12): plan, status and apply compare what really runs
(supervisord's programs, listening sockets, the settings the engine loaded) with the live release,
not only the files' hashes, and apply repairs what differs.

One real local deployment is shared by the tests; each one breaks something by hand, checks that
plan and status say so, lets apply repair it and checks that plan then says "No changes".
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx
import pytest

from assistantctl import apply, facts, plan
from cli_helpers import Deployment, applied

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("running-state"), env={"EDGE_SECRET": "e" * 32})
    # an engine-only host needs it (the last test takes the edge role away); nginx sends it meanwhile
    deployment.data["security"]["edge_secret"] = "${env:EDGE_SECRET}"
    deployment.rewrite(deployment.data)
    with applied(deployment):
        yield deployment


def supervisorctl(deployment: Deployment, *args: str) -> str:
    """The release's own supervisorctl (playbooks/vars/services.yml), as an operator would run it."""
    conf = deployment.root / "current" / "supervisor" / "supervisord.conf"
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False).stdout


def assert_repaired_by_apply(deployment: Deployment) -> None:
    repaired = deployment.run("apply", "--auto-approve")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "1 of 1 host(s) changed" in repaired.stdout
    after = deployment.run("plan", "--detailed-exitcode")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "No changes." in after.stdout
    status = json.loads(deployment.run("status", "--json").stdout)[0]
    assert status["health"] == "ok" and status["running_drift"] == []
    assert status["programs"] == {"engine": "RUNNING", "nginx": "RUNNING"}
    assert httpx.get(f"{deployment.url}/health", timeout=10).status_code == 200


def test_a_stopped_nginx_is_drift_that_status_reports_and_apply_starts(deployment):
    assert "nginx: stopped" in supervisorctl(deployment, "stop", "nginx")
    plan = deployment.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ services: nginx stopped, the release runs it -> start" in plan.stdout
    port = deployment.data["deploy"]["ports"]["http"]
    assert f"~ services: port {port} not listening (nginx)" in plan.stdout
    assert "No changes" not in plan.stdout
    host = json.loads(deployment.run("plan", "--json").stdout)["hosts"][0]
    assert {"service": "nginx", "problem": "nginx stopped, the release runs it", "fix": "start"} in host[
        "running_drift"
    ]
    status = deployment.run("status")
    assert "health: ok" not in status.stdout
    assert "nginx → engine down" in status.stdout and "running: nginx stopped" in status.stdout
    assert_repaired_by_apply(deployment)


def test_a_stopped_engine_is_drift_that_status_reports_and_apply_starts(deployment):
    assert "engine: stopped" in supervisorctl(deployment, "stop", "engine")
    plan = deployment.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ services: engine stopped, the release runs it -> start" in plan.stdout
    port = deployment.data["deploy"]["ports"]["engine"]
    assert f"~ services: port {port} not listening (engine)" in plan.stdout
    status = json.loads(deployment.run("status", "--json").stdout)[0]
    assert status["health"] != "ok" and status["health_paths"]["engine"].startswith("down")
    assert status["programs"]["engine"] == "STOPPED"
    assert_repaired_by_apply(deployment)


def test_a_saved_plan_is_refused_once_the_running_state_moved(deployment, tmp_path):
    supervisorctl(deployment, "stop", "nginx")
    plan_file = tmp_path / "plan.bin"
    assert deployment.run("plan", "-o", str(plan_file)).returncode == 0
    supervisorctl(deployment, "start", "nginx")  # repaired by hand: the reviewed repair is moot
    refused = deployment.run("apply", str(plan_file))
    assert refused.returncode == 1 and "what runs there changed" in refused.stderr
    assert "No changes." in deployment.run("plan").stdout


def test_an_engine_on_other_settings_and_a_lost_nginx_are_drift_until_apply_repairs_them(deployment):
    """The finding's state: a failed apply went back to the previous release's link but left the
    engine on the new settings and nginx gone from supervisord; plan said "No changes"."""
    before = json.loads(json.dumps(deployment.data))
    previous = os.readlink(deployment.root / "current")
    newer = json.loads(json.dumps(before))
    newer["monitoring"]["logging"]["level"] = "debug"
    deployment.rewrite(newer)
    try:
        moved = deployment.run("apply", "--auto-approve")
        assert moved.returncode == 0, moved.stdout + moved.stderr
    finally:
        deployment.rewrite(before)
    supervisorctl(deployment, "stop", "nginx")
    assert "nginx: removed process group" in supervisorctl(deployment, "remove", "nginx")
    # what a rescue does when its reload fails: the link goes back, the processes stay as they are
    link = deployment.root / "current.next"
    link.symlink_to(previous)
    link.replace(deployment.root / "current")

    plan = deployment.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ services: engine runs other settings than the live release -> reload" in plan.stdout
    assert "~ services: nginx unknown to supervisord, the release runs it -> update" in plan.stdout
    assert json.loads(deployment.run("plan", "--json").stdout)["hosts"][0]["changes"] == []  # only what runs
    status = deployment.run("status")
    assert "health: ok" not in status.stdout and "engine runs other settings" in status.stdout
    assert_repaired_by_apply(deployment)


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::]:443", ("::", 443)),
        ("*:80", ("0.0.0.0", 80)),
        ("localhost", ("localhost", 80)),
        ("unix:/run/x.sock", None),
    ],
)
def test_nginx_listen_forms_are_read_as_addresses(listen, address):
    assert facts._nginx_address(listen) == address


def test_an_engine_listening_on_another_address_than_its_release_is_drift(tmp_path):
    """The finding's engine on 0.0.0.0 while the live release has it on loopback: read from this
    machine's real /proc/net/tcp, against a release folder that names 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        release = tmp_path / "releases" / "r1"
        (release / "engine").mkdir(parents=True)
        (release / "engine" / "settings.json").write_text(json.dumps({"listen_host": "127.0.0.1", "listen_port": port}))
        (tmp_path / "current").symlink_to(release)
        manifest = {"files": {"supervisor/programs/engine.conf": {}, "engine/settings.json": {"sha256": "a"}}}
        running = facts.running(str(tmp_path), manifest)
    assert running["sockets"] == [
        {"program": "engine", "address": "127.0.0.1", "port": port, "tls": False, "listening": ["0.0.0.0"]}
    ]
    running["programs"] = {"engine": "RUNNING"}  # no supervisord here: what it would say
    drift = plan.running_drift({"supervisord_running": True, "manifest": manifest, "running": running})
    assert drift == (
        plan.ServiceDrift("engine", f"port {port}: listening on 0.0.0.0:{port}, the release has 127.0.0.1", "restart"),
    )
    assert apply.repair_vars(_Plan(drift)) == {
        "update_supervisor": False,
        "start": [],
        "restart": ["engine"],
        "reload": [],
    }


class _Plan:
    """What repair_vars reads of a HostPlan."""

    def __init__(self, drift):
        self.running_drift, self.changed_services = drift, []


def test_a_crash_looping_program_is_restarted_not_started():
    """supervisord refuses to `start` a program in BACKOFF (it still retries): repair restarts it."""
    running = {
        "expected_programs": ["engine"],
        "programs": {"engine": "BACKOFF"},
        "sockets": [{"program": "engine", "address": "127.0.0.1", "port": 1, "tls": False, "listening": []}],
        "health": {},
    }
    drift = plan.running_drift({"supervisord_running": True, "manifest": {}, "running": running})
    assert [d.fix for d in drift] == ["restart", "restart"]
    assert apply.repair_vars(_Plan(drift))["restart"] == ["engine"]


def test_an_engine_whose_workers_are_not_all_on_the_live_settings_is_drift():
    """A roll that stopped half way: the worker that answered /health runs the live settings, but
    the engine's parent says not every worker does (engine/workers.py): that is not "No changes"."""
    live = "a" * 64
    manifest = {"files": {"engine/settings.json": {"sha256": live}}}

    def drift(**health):
        running = {"expected_programs": ["engine"], "programs": {"engine": "RUNNING"}, "sockets": [], "health": {}}
        running["health"]["engine"] = {"status": "ok", **health}
        facts = {"supervisord_running": True, "manifest": manifest, "running": running}
        return [d.problem for d in plan.running_drift(facts)]

    assert drift(settings_sha256=live, workers_settings_sha256=live) == []
    assert drift(settings_sha256=live, workers_settings_sha256="b" * 64) == [
        "engine runs other settings than the live release"
    ]
    assert drift(settings_sha256=live) == []  # an engine that does not say is not judged on it
