"""Every failure, every step (issue 12): an apply that fails while shipping, validating, switching,
reloading or health-checking, whatever the change, leaves the host serving the previous release in
the running state it had (the same supervisor programs, the same ports listening, the previous
settings answering), and the change stays pending: `plan` still shows it, and the next apply
without the fault goes through.

One deployment is shared by the whole matrix. The kinds of change form a chain: each kind starts
from the spec the previous kind ended on, so a case costs one failing apply and each kind one
successful apply at its end ("then-without-fault"); a case whose rescue went wrong puts the host
back on its base spec before the next one (see `on_base`).

Faults are real where a test can make them: an override that supervisor's own checker rejects
(validate), a directory where the switch puts its next link (switch). Shipping cannot be failed
from outside, and reload and health are failed after every new service was reloaded and answered
(the hardest state to go back from), through the one test-only variable the playbooks read:
ASSISTANTCTL_TEST_FAULT=<step> (see assistantctl/apply.py), inert when unset.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import pytest

from cli_helpers import Deployment, assistantctl, free_port

pytestmark = pytest.mark.slow

EDGE_SECRET = "failure-matrix-edge-secret-0123456789abcdef"
INVALID_SUPERVISOR = "[program:engine]\nautostart = maybe\n"
NGINX_EXTRA = "location = /failure-matrix {\n    return 204;\n}\n"
LONG_MESSAGE = "x" * 100  # refused once max_message_chars is 50, answered before

STEPS = {
    # step: what the one-line reason must name
    "ship": "Unpack the bundle",
    "validate": "Validate the staged release",
    "switch": "Point current at",
    "reload": "Reload changed services",
    "health": "/health",  # the injected fault's task, or the real wait when the engine never answers
}


def change_engine_settings(state: dict) -> None:
    state["spec"]["limits"]["max_message_chars"] = 50


def change_nginx_only(state: dict) -> None:
    state["overrides"]["nginx/server.d/failure-matrix.conf"] = NGINX_EXTRA


def change_ports(state: dict) -> None:
    state["spec"]["deploy"]["ports"].update(http=free_port(), engine=free_port())


def remove_edge(state: dict) -> None:
    state["spec"]["deploy"]["hosts"][0]["roles"] = ["engine"]
    state["overrides"].clear()  # nginx's: no nginx left to lay them on


def add_edge(state: dict) -> None:
    state["spec"]["deploy"]["hosts"][0]["roles"] = ["engine", "edge"]


CHANGES = {
    "engine-settings": change_engine_settings,
    "nginx-only": change_nginx_only,
    "ports": change_ports,
    "remove-role": remove_edge,
    "add-role": add_edge,
}
# A covering set rather than all 25 pairs (each failing apply costs ~25 s on 2 cores): every step
# fails for some kind, and every kind fails at least once after its new files went live (switch,
# reload or health: where going back needs the previous running state, not only the previous link).
FAULTS = {
    "engine-settings": ["ship", "reload"],
    "nginx-only": ["validate", "reload"],
    "ports": ["health"],
    "remove-role": ["switch", "reload"],
    "add-role": ["health"],
}
assert {step for steps in FAULTS.values() for step in steps} == set(STEPS) and FAULTS.keys() == CHANGES.keys()
CASES = [(kind, step) for kind in CHANGES for step in [*FAULTS[kind], "then-without-fault"]]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(deployment, [state 0, state 1, ...]): kind i goes from state i to state i + 1."""
    deployment = Deployment(tmp_path_factory.mktemp("failure-matrix"), env={"EDGE_SECRET": EDGE_SECRET})
    spec = json.loads(json.dumps(deployment.data))
    # an engine without the edge listens beyond loopback: validation wants the edge's secret
    spec["security"]["edge_secret"] = "${env:EDGE_SECRET}"
    states = [{"spec": spec, "overrides": {}}]
    for change in CHANGES.values():
        state = json.loads(json.dumps(states[-1]))
        change(state)
        states.append(state)
    try:
        yield deployment, states
    finally:
        deployment.run("stop")


def write_state(deployment: Deployment, state: dict, extra_overrides: dict | None = None) -> None:
    deployment.rewrite(state["spec"])
    shutil.rmtree(deployment.folder / "overrides", ignore_errors=True)
    for path, text in {**state["overrides"], **(extra_overrides or {})}.items():
        file = deployment.folder / "overrides" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)


def on_base(deployment: Deployment, state: dict) -> None:
    """The host runs `state`, applied and started (an apply only when it does not already)."""
    write_state(deployment, state)
    if deployment.run("plan", "--detailed-exitcode").returncode != 0:
        result = deployment.run("apply", "--auto-approve")
        assert result.returncode == 0, result.stdout + result.stderr


def running_state(deployment: Deployment, states: list[dict]) -> dict:
    """What runs: supervisor's programs, the deployment's ports listening, and what answers."""
    conf = deployment.root / "current" / "supervisor" / "supervisord.conf"
    status = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    programs = dict(line.split()[:2] for line in status.stdout.splitlines() if line.strip())
    ports = {p for s in states for p in s["spec"]["deploy"]["ports"].values()}
    listing = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, timeout=10, check=True).stdout
    listening = set()
    for line in listing.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        if int(port) in ports:
            listening.add((address, int(port)))
    engine = f"http://127.0.0.1:{deployment.data['deploy']['ports']['engine']}"
    return {
        "programs": programs,
        "listening": listening,
        "engine health": httpx.get(f"{engine}/health", timeout=10).status_code,
        # max_message_chars: 16000 before the engine-settings change, 50 after
        "long message": httpx.post(f"{engine}/api/v1/chat", json={"message": LONG_MESSAGE}, timeout=10).status_code,
    }


def release_names(deployment: Deployment) -> set[str]:
    return {p.name for p in (deployment.root / "releases").iterdir() if not p.name.startswith(".")}


def apply_with_fault(deployment: Deployment, state: dict, step: str):
    """Apply `state` with a fault at `step`; the fault is gone again when this returns."""
    env = dict(deployment.env)
    extra = {}
    next_link = deployment.root / "current.next"
    if step == "validate":
        extra["supervisor/programs/engine.conf"] = INVALID_SUPERVISOR
    elif step == "switch":
        # a leftover directory where the switch makes its next link: `mv -T` refuses to move it
        next_link.mkdir()
    else:
        env["ASSISTANTCTL_TEST_FAULT"] = step
    write_state(deployment, state, extra)
    try:
        return assistantctl(deployment.spec, "apply", "--auto-approve", env=env)
    finally:
        if next_link.is_dir() and not next_link.is_symlink():
            shutil.rmtree(next_link)
        write_state(deployment, state)


@pytest.mark.parametrize(("kind", "step"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_a_failed_apply_leaves_the_previous_release_running(chain, kind, step):
    deployment, states = chain
    index = list(CHANGES).index(kind)
    base, changed = states[index], states[index + 1]
    on_base(deployment, base)
    if step == "then-without-fault":
        write_state(deployment, changed)
        result = deployment.run("apply", "--auto-approve")
        assert result.returncode == 0, result.stdout + result.stderr
        assert deployment.run("plan", "--detailed-exitcode").returncode == 0
        return

    previous, releases = deployment.live_release(), release_names(deployment)
    before = running_state(deployment, states)
    had_edge = "edge" in base["spec"]["deploy"]["hosts"][0]["roles"]

    result = apply_with_fault(deployment, changed, step)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    reasons = [line for line in output.splitlines() if "apply failed at '" in line]
    assert reasons and all(STEPS[step] in line for line in reasons), output

    # the host serves the previous release, as it did before the apply
    assert deployment.live_release() == previous
    write_state(deployment, base)  # the ports and settings the probes use are the previous ones
    assert running_state(deployment, states) == before, output
    if had_edge:
        assert httpx.get(f"{deployment.url}/health", timeout=10).status_code == 200

    # the failed attempt is recorded: a release made and marked FAILED, or none made at all
    [row] = json.loads(deployment.run("status", "--json").stdout)
    failed = row["last_failure"]["release"]
    assert failed != previous
    made = release_names(deployment) - releases
    if step in ("ship", "validate"):
        assert not made
    else:
        assert made == {failed} and (deployment.root / "releases" / failed / "FAILED").exists()

    # and the change is still pending
    write_state(deployment, changed)
    assert deployment.run("plan", "--detailed-exitcode").returncode == 2
