"""A host that leaves the spec is listed by `plan`, and `retire` removes what apply put there."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from cli_helpers import Deployment, free_port


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_place(root) -> None:
    conf = root / "current" / "supervisor" / "supervisord.conf"
    if conf.exists():
        subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "shutdown"], check=False)


def move(deployment: Deployment, root: str) -> None:
    """The same machine, another place: a new deploy root on new ports."""
    data = deployment.data
    data["deploy"]["root"] = root
    data["deploy"]["ports"] = {"http": free_port(), "engine": free_port(), "https": free_port()}
    deployment.rewrite(data)


def test_a_place_that_left_the_spec_is_planned_and_retired(tmp_path):
    deployment = Deployment(tmp_path)
    old_port, old_root = deployment.data["deploy"]["ports"]["http"], tmp_path / ".assistant"
    assert deployment.run("apply", "--auto-approve").returncode == 0
    try:
        move(deployment, ".moved")
        applied = deployment.run("apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert listening(old_port), "the old place still serves: nothing removes it by itself"

        plan = deployment.run("plan", "--detailed-exitcode")
        assert plan.returncode == 2, plan.stdout + plan.stderr
        assert f"- host local (this machine, {old_root}) left the spec" in plan.stdout
        assert "`assistantctl retire local` removes it" in plan.stdout
        report = json.loads(deployment.run("plan", "--json").stdout)
        assert report["departed"] == [{"host": "local", "root": str(old_root), "address": "127.0.0.1"}]

        refused = deployment.run("retire", "local")
        assert refused.returncode == 1 and "--auto-approve" in refused.stderr
        assert listening(old_port) and (old_root / "current").exists()

        retired = deployment.run("retire", "local", "--auto-approve")
        assert retired.returncode == 0, retired.stdout + retired.stderr
        assert "local: retired: services stopped; removed current, releases" in retired.stdout
        assert not listening(old_port)
        assert sorted(p.name for p in old_root.iterdir()) == ["data", "logs", "run"]
        assert json.loads((old_root / "logs" / "audit.log").read_bytes().splitlines()[-1])["action"] == "retire"
        assert listening(deployment.data["deploy"]["ports"]["http"]), "the spec's own place keeps serving"

        after = deployment.run("plan", "--detailed-exitcode")
        assert after.returncode == 0 and "left the spec" not in after.stdout, after.stdout
        controller_log = (tmp_path / ".assistantctl" / "audit.log").read_bytes().splitlines()
        last = json.loads(controller_log[-2])  # the plan above came after it
        assert (last["action"], last["result"], last["hosts"]) == ("retire", "complete", ["local"])
    finally:
        deployment.run("stop")
        stop_place(old_root)  # when the test failed before retiring it


def test_retire_refuses_a_host_of_the_spec_and_a_renamed_host_has_not_left(tmp_path):
    deployment = Deployment(tmp_path)
    assert deployment.run("apply", "--auto-approve").returncode == 0
    try:
        refused = deployment.run("retire", "local", "--auto-approve")
        assert refused.returncode == 1
        assert "local is in the spec: remove it from deploy.hosts first" in refused.stderr
        data = deployment.data
        data["deploy"]["hosts"][0]["name"] = "box"  # the same place under a new name
        deployment.rewrite(data)
        plan = deployment.run("plan", "--json")
        assert json.loads(plan.stdout)["departed"] == [], plan.stdout
        assert deployment.run("retire", "local", "--auto-approve").returncode == 1
        assert listening(deployment.data["deploy"]["ports"]["http"])
    finally:
        deployment.run("stop")


def test_purge_removes_the_whole_root(tmp_path):
    deployment = Deployment(tmp_path)
    old_root = tmp_path / ".assistant"
    assert deployment.run("apply", "--auto-approve").returncode == 0
    move(deployment, ".moved")
    try:
        result = deployment.run("retire", "local", "--purge", "--auto-approve")
        assert result.returncode == 0, result.stdout + result.stderr
        assert not old_root.exists()
        assert deployment.run("plan", "--json").returncode == 0
    finally:
        deployment.run("stop")
        stop_place(old_root)
