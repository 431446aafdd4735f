"""A real apply to this machine: Ansible ships the bundle, supervisord runs nginx and the engine.

One deployment is shared by the tests in this module (an apply costs ~10 s); each test leaves it
running on the spec it found, and the fixture stops everything at the end, pass or fail.
"""

from __future__ import annotations

import json

import httpx
import pytest

from api_keys import bearer, create_key, wait_for_key
from cli_helpers import Deployment, applied, default_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    with applied(Deployment(tmp_path_factory.mktemp("local-apply"))) as deployment:
        yield deployment


def test_apply_starts_an_assistant_that_answers_through_nginx(deployment):
    alice = bearer(create_key(deployment.root / "current" / "engine" / "settings.json", "alice"))
    wait_for_key(deployment.url, alice)
    reply = httpx.post(f"{deployment.url}/api/v1/chat", json={"message": "hello"}, headers=alice, timeout=10)
    assert reply.status_code == 200
    body = reply.json()
    assert "hello" in body["reply"] and body["model"] == "local"
    health = httpx.get(f"{deployment.url}/health", timeout=5)
    assert health.status_code == 200
    history = httpx.get(f"{deployment.url}/api/v1/history", headers=alice, timeout=5).json()
    assert history["user"] == "alice"
    assert [(m["role"], m["conversation_id"]) for m in history["messages"]] == [
        ("assistant", body["conversation_id"]),
        ("user", body["conversation_id"]),
    ]
    assert history["messages"][1]["content"] == "hello"


def test_the_default_deployment_answers_arithmetic_through_a_tool(deployment):
    """What `make run` deploys: the offline builtin model asks for the calculator, the engine runs it."""
    reply = httpx.post(f"{deployment.url}/api/v1/chat", json={"message": "what is 6*7?"}, timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "6*7 = 42" in body["reply"], body
    assert [(t["name"], t["outcome"]) for t in body["tools"]] == [("calculator", "ok")], body


def test_streaming_passes_through_nginx_as_server_sent_events(deployment):
    with httpx.stream("POST", f"{deployment.url}/api/v1/chat/stream", json={"message": "stream me"}, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data:")]
    assert len(events) >= 2


def test_a_second_apply_changes_nothing_and_restarts_nothing(deployment):
    engine_pid = (deployment.root / "run").glob("*.pid")
    before = {p.name: p.read_text() for p in engine_pid}
    release = deployment.live_release()
    again = deployment.run("apply", "--auto-approve")
    assert again.returncode == 0, again.stderr
    assert "No changes." in again.stdout and "Apply complete: 0 changed." in again.stdout
    assert deployment.live_release() == release
    assert {p.name: p.read_text() for p in (deployment.root / "run").glob("*.pid")} == before


def test_plan_exit_code_says_whether_the_spec_changed(deployment):
    assert deployment.run("plan", "--detailed-exitcode").returncode == 0
    data = default_spec() | {"deploy": deployment.data["deploy"]}
    data["limits"]["rate_limit"]["burst"] = 77
    original = deployment.data
    deployment.rewrite(data)
    try:
        changed = deployment.run("plan", "--detailed-exitcode", "--json")
        assert changed.returncode == 2
        plan = json.loads(changed.stdout)
        paths = {c["path"] for host in plan["hosts"] for c in host["changes"]}
        assert "engine/settings.json" in paths and "nginx/site.conf" in paths
    finally:
        deployment.rewrite(original)


def test_a_hand_edit_on_the_host_shows_as_drift(deployment):
    site = deployment.root / "current" / "nginx" / "site.conf"
    original = site.read_text()
    site.write_text(original + "\n# edited by hand\n")
    try:
        plan = deployment.run("plan", "--detailed-exitcode")
        assert plan.returncode == 2
        assert "~ nginx/site.conf  (drift: edited on the host since the last apply)" in plan.stdout
    finally:
        site.write_text(original)


def test_a_config_nginx_rejects_never_goes_live(deployment, tmp_path):
    release = deployment.live_release()
    original = deployment.data
    broken = json.loads(json.dumps(original))
    broken["security"]["tls"] = {
        "enabled": True,
        "certificate": str(tmp_path / "absent.crt"),
        "key": str(tmp_path / "absent.key"),
    }
    deployment.rewrite(broken)
    try:
        result = deployment.run("apply", "--auto-approve")
        assert result.returncode == 1
        assert "FAILED" in result.stdout and "absent.crt" in result.stdout
    finally:
        deployment.rewrite(original)
    assert deployment.live_release() == release
    assert not list((deployment.root / "releases").glob(".staging-*"))
    reply = httpx.post(f"{deployment.url}/api/v1/chat", json={"message": "still there?"}, timeout=10)
    assert reply.status_code == 200


def test_a_changed_spec_goes_live_and_reloads_only_what_changed(deployment):
    original = deployment.data
    data = json.loads(json.dumps(original))
    data["limits"]["max_message_chars"] = 10
    deployment.rewrite(data)
    try:
        result = deployment.run("apply", "--auto-approve")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "services to reload: engine" in result.stdout
        too_long = httpx.post(f"{deployment.url}/api/v1/chat", json={"message": "x" * 11}, timeout=10)
        assert too_long.status_code in (400, 413, 422)
    finally:
        deployment.rewrite(original)
        assert deployment.run("apply", "--auto-approve").returncode == 0
