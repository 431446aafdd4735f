"""The default deployment, applied to this machine: open on loopback, closed to everyone else.

Also `assistantctl keys`: a key made with the CLI opens the assistant to a client from elsewhere,
and a revoked one closes it again.
"""

from __future__ import annotations

import json

import httpx
import pytest

from addresses import machine_address
from api_keys import wait_for_key
from cli_helpers import Deployment, applied

pytestmark = pytest.mark.slow
CHAT = {"message": "hello"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    with applied(Deployment(tmp_path_factory.mktemp("secure-default"))) as deployment:
        yield deployment


def elsewhere(deployment: Deployment) -> str:
    return f"http://{machine_address()}:{deployment.data['deploy']['ports']['http']}"


def test_loopback_answers_with_no_set_up_and_the_other_address_needs_a_key(deployment):
    assert httpx.post(f"{deployment.url}/api/v1/chat", json=CHAT, timeout=10).status_code == 200
    remote = elsewhere(deployment)
    refused = [
        httpx.post(f"{remote}/api/v1/chat", json=CHAT, timeout=10),
        httpx.post(f"{remote}/api/v1/chat/stream", json=CHAT, timeout=10),
        httpx.get(f"{remote}/api/v1/history", params={"user": "alice"}, timeout=10),
        httpx.get(f"{remote}/api/v1/history", timeout=10),
        httpx.post(f"{remote}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, timeout=10),
        httpx.get(f"{remote}/openapi.json", timeout=10),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused), [r.text for r in refused]
    assert httpx.get(f"{remote}/metrics", timeout=10).status_code == 403


def test_a_key_from_the_cli_opens_the_assistant_and_revoking_it_closes_it(deployment):
    created = deployment.run("keys", "create", "alice", "--scope", "chat", "--scope", "history", "--name", "laptop")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-ast-") and "shown this once" in created.stderr
    headers = {"Authorization": f"Bearer {key}"}
    remote = elsewhere(deployment)
    wait_for_key(remote, headers)
    answer = httpx.post(f"{remote}/api/v1/chat", json=CHAT, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    history = httpx.get(f"{remote}/api/v1/history", headers=headers, timeout=10).json()
    assert history["user"] == "alice" and len(history["messages"]) == 2
    listed = deployment.run("keys", "list", "--json")
    record = next(k for k in json.loads(listed.stdout) if k["name"] == "laptop")
    assert key not in listed.stdout and record["user"] == "alice" and record["revoked_at"] is None
    assert deployment.run("keys", "revoke", record["id"]).returncode == 0
    wait_for_key(remote, headers, known=False)
    assert httpx.post(f"{remote}/api/v1/chat", json=CHAT, headers=headers, timeout=10).status_code == 401
    audit = (deployment.folder / ".assistantctl" / "audit.log").read_text()
    assert '"keys.create"' in audit and '"keys.revoke"' in audit and key not in audit


def test_plan_flags_an_anonymous_deployment_open_to_everyone(deployment):
    data = json.loads(json.dumps(deployment.data))
    data.setdefault("security", {})["anonymous"] = "anywhere"
    deployment.rewrite(data)
    try:
        plan = deployment.run("plan")
        as_json = json.loads(deployment.run("plan", "--json").stdout)
    finally:
        deployment.rewrite(json.loads(json.dumps({**data, "security": {**data["security"], "anonymous": "loopback"}})))
    assert plan.returncode == 0
    assert plan.stdout.startswith("! security.anonymous is 'anywhere'")
    assert as_json["warnings"] and "anywhere" in as_json["warnings"][0]
