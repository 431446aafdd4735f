"""Saved plans, locks, rollback, status and the audit log, on a real local deployment."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from api_keys import bearer, create_key, wait_for_key
from assistantctl import host_actions
from cli_helpers import Deployment, applied

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-value-never-written"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("lifecycle"), env={"ASSISTANT_TEST_JWT": SECRET})
    # a secret in the spec: it must reach the host's 0600 file, never the plan, the audit or the output
    deployment.data["security"]["jwt"] = {"enabled": False, "secret": "${env:ASSISTANT_TEST_JWT}"}
    deployment.rewrite(deployment.data)
    with applied(deployment):
        yield deployment


def changed(deployment: Deployment, burst: int) -> dict:
    data = json.loads(json.dumps(deployment.data))
    data["limits"]["rate_limit"]["burst"] = burst
    return data


def audit(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def key_for(deployment: Deployment, user: str) -> dict[str, str]:
    """Headers with a new API key for `user` on the live engine (made without the CLI, so unaudited)."""
    key = bearer(create_key(deployment.root / "current" / "engine" / "settings.json", user))
    wait_for_key(deployment.url, key)
    return key


def test_secret_values_reach_the_host_only_in_a_file_for_its_service(deployment):
    secrets = deployment.root / "current" / "engine" / "secrets.json"
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert SECRET in secrets.read_text()
    others = [p for p in (deployment.root / "current").rglob("*") if p.is_file() and p != secrets]
    assert others and not [p for p in others if SECRET in p.read_text(errors="replace")]
    plan = deployment.run("plan", "--diff", "--json")
    assert SECRET not in plan.stdout + plan.stderr


def test_a_saved_plan_applies_exactly_what_was_reviewed(deployment, tmp_path):
    deployment.rewrite(changed(deployment, 41))
    plan_file = tmp_path / "plan.bin"
    planned = deployment.run("plan", "-o", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    assert SECRET.encode() not in plan_file.read_bytes()
    # the spec moves on after review: the saved plan still applies what was planned
    deployment.rewrite(changed(deployment, 42))
    applied = deployment.run("apply", str(plan_file))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    settings = json.loads((deployment.root / "current" / "engine" / "settings.json").read_text())
    assert settings["rate_limit"]["burst"] == 41
    assert SECRET not in applied.stdout + applied.stderr


def test_a_saved_plan_is_refused_when_the_host_changed_since(deployment, tmp_path):
    deployment.rewrite(changed(deployment, 43))
    plan_file = tmp_path / "plan.bin"
    assert deployment.run("plan", "-o", str(plan_file)).returncode == 0
    site = deployment.root / "current" / "nginx" / "site.conf"
    original = site.read_text()
    site.write_text(original + "# hand edit\n")
    try:
        refused = deployment.run("apply", str(plan_file))
    finally:
        site.write_text(original)
    assert refused.returncode == 1
    assert "local: what runs there changed since the plan was made" in refused.stderr


def test_a_lock_left_by_a_dead_run_blocks_apply_until_unlocked(deployment):
    holder = {"actor": "ci@runner-7", "action": "apply", "controller": "runner-7", "pid": 4242, "token": "t"}
    assert host_actions.acquire_lock(str(deployment.root), {**holder, "locked_at": 0})["acquired"]
    deployment.rewrite(changed(deployment, 44))
    blocked = deployment.run("apply", "--auto-approve")
    assert blocked.returncode == 1
    assert "local is locked by ci@runner-7 (apply, pid 4242 on runner-7" in blocked.stderr
    plan = deployment.run("plan")
    assert "warning: local is locked by ci@runner-7" in plan.stderr
    # runner-7 is another controller: this one cannot see whether that run still goes on.
    refused = deployment.run("unlock")
    assert refused.returncode == 1 and "whose processes this one cannot see" in refused.stderr
    unlocked = deployment.run("unlock", "--force")
    assert "local: forced open the lock held by ci@runner-7" in unlocked.stdout
    assert deployment.run("apply", "--auto-approve").returncode == 0
    assert not (deployment.root / "run" / "apply.lock").exists(), "apply releases its own lock"


def test_rollback_returns_to_the_previous_release_and_back(deployment):
    deployment.rewrite(changed(deployment, 45))
    assert deployment.run("apply", "--auto-approve").returncode == 0
    newest = deployment.live_release()
    back = deployment.run("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    previous = deployment.live_release()
    assert previous != newest
    settings = json.loads((deployment.root / "current" / "engine" / "settings.json").read_text())
    assert settings["rate_limit"]["burst"] == 44
    assert (
        httpx.post(f"{deployment.url}/api/v1/chat", json={"message": "after rollback"}, timeout=10).status_code == 200
    )
    # the spec still says 45: plan shows the way forward again
    assert deployment.run("plan", "--detailed-exitcode").returncode == 2
    forward = deployment.run("rollback", "--to", newest)
    assert forward.returncode == 0, forward.stdout + forward.stderr
    assert deployment.live_release() == newest
    assert deployment.run("plan", "--detailed-exitcode").returncode == 0


def test_rollback_to_an_unknown_release_is_refused(deployment):
    result = deployment.run("rollback", "--to", "nope-20000101T000000Z")
    assert result.returncode == 1
    assert "local: no release nope-20000101T000000Z" in result.stderr


def test_status_shows_release_actor_services_and_health(deployment):
    result = deployment.run("status", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["release"] == deployment.live_release()
    assert row["health"] == "ok"
    assert row["programs"] == {"engine": "RUNNING", "nginx": "RUNNING"}
    assert row["drift"] == [] and row["lock"] is None
    assert row["applied"]["action"] in ("apply", "rollback") and row["applied"]["result"] == "complete"


def test_every_change_is_in_the_audit_log_on_the_controller_and_the_host(deployment):
    controller = audit(deployment.folder / ".assistantctl" / "audit.log")
    host = audit(deployment.root / "logs" / "audit.log")
    actions = [e["action"] for e in controller]
    assert {"plan", "apply", "rollback", "unlock"} <= set(actions)
    refused = [e for e in controller if e["result"].startswith("refused")]
    assert refused, "refused applies are audited too"
    # The controller also logs runs that changed no host (started, no changes, refused, interrupted).
    controller_only = ("started", "no changes", "refused", "interrupted")
    changes = [e for e in controller if e["action"] != "plan" and not e["result"].startswith(controller_only)]
    chain = ("seq", "prev", "hash", "host_heads", "controller_head")  # each log's own chain and anchors

    def content(entries: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if k not in chain} for e in entries]

    assert content(host) == content(changes), "the host keeps the entries of every run that changed it"
    for entry in controller:
        assert {"time", "actor", "action", "hosts", "impact", "result", "spec_sha256"} <= set(entry)
    assert SECRET not in (deployment.folder / ".assistantctl" / "audit.log").read_text()


def test_a_lost_host_is_rebuilt_from_the_spec_and_its_history_restored(deployment, tmp_path):
    """The DR runbook: backup, lose everything, `apply` from the same spec, `restore`."""
    dora = key_for(deployment, "dora")
    said = httpx.post(f"{deployment.url}/api/v1/chat", json={"message": "remember me"}, headers=dora, timeout=10)
    conversation = said.json()["conversation_id"]
    saved = deployment.run("backup", "--out", str(tmp_path / "backups"))
    assert saved.returncode == 0, saved.stderr
    [archive] = (tmp_path / "backups").glob("local-*.tar.gz")
    assert SECRET.encode() not in archive.read_bytes()

    assert deployment.run("stop").returncode == 0
    shutil.rmtree(deployment.root)
    rebuilt = deployment.run("apply", "--auto-approve")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    wait_for_key(deployment.url, dora, known=False)
    lost = httpx.get(f"{deployment.url}/api/v1/history", headers=dora, timeout=10)
    assert lost.status_code == 401  # the keys went with the host

    restored = deployment.run("restore", str(archive), "--host", "local")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    # dora's key comes back with the history: clients keep working after a rebuild.
    assert "local: restored data/history.sqlite3, data/keys.sqlite3" in restored.stdout
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            history = httpx.get(f"{deployment.url}/api/v1/history", headers=dora, timeout=5)
            if history.status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    messages = history.json()["messages"]
    assert [(m["role"], m["conversation_id"]) for m in messages] == [
        ("assistant", conversation),
        ("user", conversation),
    ]
    assert messages[1]["content"] == "remember me"


def test_apply_json_reports_each_host_for_pipelines(deployment):
    deployment.rewrite(changed(deployment, 46))
    result = deployment.run("apply", "--auto-approve", "--json", "--limit", "local")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "complete"
    assert [(h["host"], h["ok"], h["release"]) for h in report["hosts"]] == [("local", True, deployment.live_release())]
    assert report["summary"]["change"] >= 1
    assert "[local] changed   Point current at" in result.stderr, "progress goes to stderr"
    again = json.loads(deployment.run("apply", "--auto-approve", "--json").stdout)
    assert again["hosts"] == [] and again["summary"]["hosts_changing"] == 0
