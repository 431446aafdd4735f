"""`assistantctl apply` to three SSH hosts: a rolling deploy, a no-op, drift, and a rollout that stops.

The fleet is one engine host and two edges: `core` runs the engine on its own address (history in
SQLite, the default), `edge-a` and `edge-b` run nginx proxying to it over the bridge. Several engine
hosts need a shared history (`deploy.state.history: postgres`): test_ha.py runs two on a real
PostgreSQL. One deployment is shared by the tests of this module, in order; each test leaves it on
the spec it found.
"""

from __future__ import annotations

import re
import shutil
import time
from importlib import metadata

import httpx
import pytest

from api_keys import bearer, wait_for_key
from fleet_deployment import FleetDeployment, hosts_runtime, only_prepared

pytestmark = pytest.mark.slow

ROLES = {"core": ["engine"], "edge-a": ["edge"], "edge-b": ["edge"]}
EDGES = ("edge-a", "edge-b")
ENGINE_PORT = 8081


@pytest.fixture(scope="module")
def fleet(make_fleet, tmp_path_factory) -> FleetDeployment:
    # serial 3: the three hosts are deployed in one batch (the failure test sets serial 1). No
    # `python:` on the hosts: apply installs the engine's own virtualenv on each.
    folder = tmp_path_factory.mktemp("fleet-spec")
    deployment = FleetDeployment(make_fleet(list(ROLES)), folder, ROLES, python=None, serial=3)
    first, seconds = deployment.timed("apply", "--auto-approve")
    print(f"\nfirst apply to 3 SSH hosts (serial 3): {seconds:.1f} s")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Apply complete: 3 of 3 host(s) changed." in first.stdout
    deployment.first_apply_output = first.stdout
    return deployment


def key_for(fleet: FleetDeployment, user: str) -> dict[str, str]:
    """Headers with a new API key for `user`, made on `core` (the engine host) by `assistantctl keys`."""
    created = fleet.run("keys", "create", user, "--host", "core")
    assert created.returncode == 0, created.stderr
    key = bearer(created.stdout.strip())
    for edge in ("edge-a", "edge-b"):
        wait_for_key(fleet.url(edge), key)
    return key


@pytest.fixture(scope="module")
def alice(fleet) -> dict[str, str]:
    return key_for(fleet, "alice")


def chat(url: str, message: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/chat", json={"message": message}, headers=headers, timeout=10)


def test_apply_deploys_every_host_over_ssh_and_each_edge_answers_through_its_nginx(fleet, alice):
    replies = {}
    for name in EDGES:
        reply = chat(fleet.url(name), f"hello from {name}", alice)
        assert reply.status_code == 200, reply.text
        assert f"hello from {name}" in reply.json()["reply"]
        replies[name] = reply.json()["conversation_id"]
    # The engine-only host answers its edges only: a client with a valid key, but not an edge, is refused.
    direct = chat(fleet.url("core", port=ENGINE_PORT), "hello engine", alice)
    assert direct.status_code == 403 and "answers its edges only" in direct.text
    # Both edges proxy to the one engine: what went through edge-a is in the history edge-b serves.
    history = httpx.get(fleet.url("edge-b", "/api/v1/history"), headers=alice, timeout=5).json()
    assert history["user"] == "alice"
    assert {m["conversation_id"] for m in history["messages"]} >= set(replies.values())
    # Each host has its own files under the same absolute root.
    assert (fleet.host("core").files / "current" / "engine" / "settings.json").exists() is False  # link is absolute
    assert (fleet.host("core").path("current/engine/settings.json")).is_file()
    assert not fleet.host("core").path("current/nginx").exists()
    for name in EDGES:
        assert fleet.host(name).path("current/nginx/site.conf").is_file()
        assert not fleet.host(name).path("current/engine").exists()


def test_each_host_runs_the_engine_from_a_virtualenv_holding_the_controllers_version(fleet):
    runtime = hosts_runtime()
    venv = f"{fleet.fleet.root}/venvs/{runtime.id}"
    assert fleet.first_apply_output.count(f"+ engine runtime {runtime.id} (virtualenv {venv})") == len(ROLES)
    assert "engine runtime to install on 3 host(s)" in fleet.first_apply_output
    for name in ROLES:
        host = fleet.host(name)
        assert host.path(f"venvs/{runtime.id}/.complete").exists()
        assert f"{venv}/bin/python -m supervisor.supervisord" in _supervisord_command(host)
        # The host's own copy, not the controller's checkout reached through the shared filesystem.
        probe = "import assistantctl.engine as e, importlib.metadata as m; print(e.__file__, m.version('assistantctl'))"
        where, version = host.run(f"{venv}/bin/python", "-c", probe).stdout.split()
        assert where.startswith(f"{venv}/lib/") and version == metadata.version("assistantctl")
        frozen = host.run(f"{venv}/bin/python", "-m", "pip", "freeze", "--exclude", "assistantctl").stdout.split()
        assert sorted(line.lower().replace("_", "-") for line in frozen) == sorted(runtime.requirements)
    engine = fleet.host("core").path("current/supervisor/programs/engine.conf").read_text()
    assert f"{venv}/bin/python -m assistantctl.engine" in engine


def test_serial_from_the_spec_deploys_that_many_hosts_at_once(fleet):
    # One batch of three: the hosts' progress lines interleave instead of following each other.
    order = [m.group(1) for m in re.finditer(r"^  \[([a-z-]+)\]", fleet.first_apply_output, re.M)]
    assert set(order) == set(ROLES)
    assert len(_runs(order)) > len(ROLES), order


def test_a_second_apply_changes_nothing_and_restarts_nothing(fleet):
    before = {name: (fleet.live_release(name), fleet.pid_files(name)) for name in ROLES}
    assert all(pids for _, pids in before.values())
    again, seconds = fleet.timed("apply", "--auto-approve")
    print(f"\nno-op apply to 3 SSH hosts: {seconds:.2f} s")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Apply complete: 0 changed." in again.stdout
    assert {name: (fleet.live_release(name), fleet.pid_files(name)) for name in ROLES} == before


def test_a_hand_edit_on_one_host_shows_as_drift_on_that_host_only(fleet):
    site = fleet.host("edge-b").path("current/nginx/site.conf")
    original = site.read_text()
    site.write_text(original + "\n# edited by hand\n")
    try:
        plan = fleet.run("plan", "--detailed-exitcode")
        assert plan.returncode == 2, plan.stdout + plan.stderr
        assert "~ nginx/site.conf  (drift: edited on the host since the last apply)" in plan.stdout
        by_host = _plan_sections(plan.stdout)
        assert "drift" in by_host["edge-b"]
        assert "drift" not in by_host["edge-a"] and "drift" not in by_host["core"]
    finally:
        site.write_text(original)
    assert fleet.run("plan", "--detailed-exitcode").returncode == 0


def test_apply_repairs_a_hand_edit_and_removes_runtimes_no_release_uses(fleet):
    runtime = hosts_runtime().id
    core = fleet.host("core")
    stale = core.path("venvs/0123456789ab")
    stale.mkdir()
    (stale / ".complete").touch()
    program = core.path("current/supervisor/programs/engine.conf")
    rendered = program.read_text()
    program.write_text(rendered + "; edited by hand\n")
    result = fleet.run("apply", "--auto-approve", "--limit", "core")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "~ supervisor/programs/engine.conf  (drift: edited on the host since the last apply)" in result.stdout
    assert core.path("current/supervisor/programs/engine.conf").read_text() == rendered
    assert not stale.exists()
    assert sorted(p.name for p in core.path("venvs").iterdir()) == [runtime]


def test_a_config_nginx_rejects_fails_on_the_first_host_and_stops_the_rollout(fleet, alice):
    live = {name: fleet.live_release(name) for name in ROLES}
    releases = {name: fleet.releases(name) for name in ROLES}
    original = fleet.data
    one_at_a_time = fleet.copy()
    one_at_a_time["deploy"]["serial"] = 1
    # Valid for every check of ours, refused by nginx -t: an override snippet with an unknown directive.
    snippet = fleet.folder / "overrides" / "nginx" / "server.d" / "broken.conf"
    snippet.parent.mkdir(parents=True)
    snippet.write_text("location = /broken {\n    no_such_directive on;\n}\n")
    fleet.rewrite(one_at_a_time)
    try:
        result = fleet.run("apply", "--auto-approve")
    finally:
        shutil.rmtree(fleet.folder / "overrides")
        fleet.rewrite(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r'^edge-a: FAILED .*unknown directive "no_such_directive"', result.stdout, re.M), result.stdout
    assert "edge-b: FAILED" in result.stdout and "did not run" in result.stdout, result.stdout
    # serial 1: edge-b was prepared (with every host, before any switched) but never staged a release
    assert only_prepared("edge-b", result.stdout), result.stdout
    assert {name: fleet.live_release(name) for name in ROLES} == live
    assert {name: fleet.releases(name) for name in ROLES} == releases  # no new release, no staging left
    for name in EDGES:
        assert chat(fleet.url(name), "still there?", alice).status_code == 200
    assert fleet.run("plan", "--detailed-exitcode").returncode == 0


def _runs(order: list[str]) -> list[str]:
    """Consecutive runs of the same host, e.g. [a, a, b, a] -> [a, b, a]."""
    return [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]


def _plan_sections(text: str) -> dict[str, str]:
    """The plan's text split by its `host <name> (...)` header lines."""
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("host "):
            current = line.split()[1]
        if current:
            sections[current] = sections.get(current, "") + line + "\n"
    return sections


def _supervisord_command(host) -> str:
    pid = host.path("run/supervisord.pid").read_text().strip()
    return host.run("cat", f"/proc/{pid}/cmdline").stdout.replace("\0", " ")


def test_a_lost_host_is_rebuilt_from_the_spec_and_its_backup_serves_the_same_history(fleet, tmp_path):
    dr = key_for(fleet, "dr")
    said = chat(fleet.url("edge-a"), "remember this across the rebuild", dr).json()
    backup = fleet.run("backup", "--host", "core", "--out", str(tmp_path))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    [archive] = tmp_path.glob("core-*.tar.gz")

    core = fleet.host("core")
    python = f"{fleet.fleet.root}/venvs/{hosts_runtime().id}/bin/python"
    core.supervisorctl(python, "shutdown")
    _wait_until_gone(core.path("run/supervisord.pid"))
    for entry in core.files.iterdir():  # the machine is lost: no release, no runtime, no history
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    assert chat(fleet.url("edge-a"), "anyone there?", dr).status_code == 502

    rebuilt = fleet.run("apply", "--auto-approve", "--limit", "core")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"+ engine runtime {hosts_runtime().id}" in rebuilt.stdout
    wait_for_key(fleet.url("edge-a"), dr, known=False)
    # The keys went with the host, and come back with the backup: clients keep their keys.
    assert httpx.get(fleet.url("edge-a", "/api/v1/history"), headers=dr, timeout=5).status_code == 401

    restored = fleet.run("restore", str(archive), "--host", "core")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "data/keys.sqlite3" in restored.stdout
    deadline = time.monotonic() + 20
    while (answer := httpx.get(fleet.url("edge-b", "/api/v1/history"), headers=dr, timeout=5)).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    history = answer.json()
    contents = [(m["conversation_id"], m["content"]) for m in history["messages"]]
    assert (said["conversation_id"], "remember this across the rebuild") in contents
    assert (said["conversation_id"], said["reply"]) in contents
    assert fleet.run("plan", "--detailed-exitcode").returncode == 0


def _wait_until_gone(path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not path.exists(), f"{path} still there"
