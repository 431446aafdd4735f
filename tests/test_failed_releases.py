"""A release that failed (validation, reload, health check) is marked on the host: `rollback`
offers it only with --force, never picks it by default, and `status` shows the last failed attempt.

The failures are real ones on a local deployment: an engine program that never answers /health
(a supervisor override), and an nginx snippet nginx -t rejects.
"""

from __future__ import annotations

import json
import shutil

import pytest

from cli_helpers import Deployment, applied

pytestmark = pytest.mark.slow

NEVER_HEALTHY = "[program:engine]\ncommand = /bin/sleep 600\n"
INVALID_NGINX = "location = /x {\n    no_such_directive on;\n}\n"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("failed-releases"))
    data = dict(deployment.data)
    # An engine that never answers fails the health check after this long (the default is 40 s).
    data["deploy"] = {**data["deploy"], "health_check_seconds": 15}
    deployment.rewrite(data)
    with applied(deployment) as deployment:
        yield deployment


def releases(deployment: Deployment) -> list[str]:
    """Oldest first: names end in the UTC time of their apply."""
    names = [p.name for p in (deployment.root / "releases").iterdir() if not p.name.startswith(".")]
    return sorted(names, key=lambda name: (name.rpartition("-")[2], name))


def apply_with_override(deployment: Deployment, path: str, text: str):
    """Apply with overrides/<path> in place (removed again afterwards); returns the CLI's result."""
    override = deployment.folder / "overrides" / path
    override.parent.mkdir(parents=True, exist_ok=True)
    override.write_text(text)
    try:
        return deployment.run("apply", "--auto-approve")
    finally:
        shutil.rmtree(deployment.folder / "overrides")


@pytest.fixture(scope="module")
def unhealthy(deployment):
    """(the good live release, the release that failed its health check)"""
    good, before = deployment.live_release(), set(releases(deployment))
    result = apply_with_override(deployment, "supervisor/programs/engine.conf", NEVER_HEALTHY)
    assert result.returncode == 1, result.stdout + result.stderr
    assert deployment.live_release() == good, "the failed release must not stay live"
    [failed] = set(releases(deployment)) - before
    return good, failed


def test_a_release_that_failed_its_health_check_is_marked_failed_on_the_host(deployment, unhealthy):
    _, failed = unhealthy
    marker = json.loads((deployment.root / "releases" / failed / "FAILED").read_text())
    assert marker["release"] == failed
    assert "health" in marker["step"].lower()
    assert marker["reason"] and marker["time"].endswith("Z")


def test_rollback_to_a_failed_release_is_refused_without_force(deployment, unhealthy):
    good, failed = unhealthy
    result = deployment.run("rollback", "--to", failed)
    assert result.returncode == 1
    assert f"local: release {failed} failed" in result.stderr and "--force" in result.stderr
    assert deployment.live_release() == good


def test_rollback_with_force_goes_to_a_failed_release(deployment, unhealthy):
    good, failed = unhealthy
    result = deployment.run("rollback", "--to", failed, "--force")
    assert f"local: {good} -> {failed}" in result.stdout, result.stdout + result.stderr
    # the release is still unhealthy: the rollback play goes back to where it was
    assert result.returncode == 1 and deployment.live_release() == good


def test_status_shows_the_last_failed_apply(deployment, unhealthy):
    _, failed = unhealthy
    text = deployment.run("status")
    assert f"last failed apply: release {failed} at " in text.stdout, text.stdout
    [row] = json.loads(deployment.run("status", "--json").stdout)
    assert row["last_failure"]["release"] == failed and "health" in row["last_failure"]["step"].lower()


def test_a_release_that_failed_validation_leaves_no_release_but_shows_in_status(deployment, unhealthy):
    before = releases(deployment)
    result = apply_with_override(deployment, "nginx/server.d/broken.conf", INVALID_NGINX)
    assert result.returncode == 1, result.stdout + result.stderr
    assert releases(deployment) == before, "a release nginx -t rejects is never made"
    [row] = json.loads(deployment.run("status", "--json").stdout)
    failure = row["last_failure"]
    assert failure["release"] not in before
    assert "Validate" in failure["step"] and "no_such_directive" in failure["reason"]
    assert "no_such_directive" in deployment.run("status").stdout


def test_plain_rollback_skips_failed_releases(deployment, unhealthy):
    good, failed = unhealthy
    data = json.loads(json.dumps(deployment.data))
    data["limits"]["max_message_chars"] = 1234
    deployment.rewrite(data)
    assert deployment.run("apply", "--auto-approve").returncode == 0
    newer = deployment.live_release()
    assert releases(deployment).index(good) < releases(deployment).index(failed) < releases(deployment).index(newer)
    result = deployment.run("rollback")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"local: {newer} -> {good}" in result.stdout
    assert deployment.live_release() == good


def test_failed_releases_do_not_push_good_ones_out(tmp_path):
    """Pruning keeps the newest good releases (failed ones do not count) and only the newest
    failed one, so a run of failed applies never leaves rollback without a good release."""
    import os
    import subprocess
    import sys

    from cli_helpers import REPO

    releases = tmp_path / "releases"
    names = ["good-1", "good-2", "failed-3", "live-4", "failed-5", "failed-6", "failed-7"]
    for age, name in enumerate(reversed(names)):
        (releases / name).mkdir(parents=True)
        if name.startswith("failed"):
            (releases / name / "FAILED").write_text("{}")
        os.utime(releases / name, (1_000_000 - age, 1_000_000 - age))
    play = tmp_path / "prune.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.include_tasks: {REPO / 'playbooks' / 'tasks' / 'prune.yml'}\n"
    )
    extra = {
        "assistant_root": str(tmp_path),
        "release_dir": str(releases / "live-4"),
        "assistant_keep_releases": 2,
        "ansible_python_interpreter": sys.executable,
    }
    command = [sys.executable, "-m", "ansible", "playbook", "-i", "localhost,", "-c", "local", str(play)]
    result = subprocess.run(
        [*command, "-e", json.dumps(extra)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in releases.iterdir()) == ["failed-7", "good-2", "live-4"]
