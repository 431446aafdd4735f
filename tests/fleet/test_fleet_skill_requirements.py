"""A skill folder's requirements.txt on an SSH host with the managed runtime (issue 13, item 7):
plan resolves it into a runtime of its own, apply installs that virtualenv beside the engine's and
the skill imports its requirement there; a requirement against an engine pin stops plan before the
host changes.

The requirement is a wheel this test writes, offered to pip with PIP_FIND_LINKS; the engine's own
wheels come from the controller's wheelhouse cache (or its package index, the first time).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from test_skill_requirements import write_wheel

from api_keys import bearer
from assistantctl.runtime import controller_runtime
from fleet_deployment import FleetDeployment, hosts_runtime

pytestmark = pytest.mark.slow

ROLES = {"core": ["engine", "edge"]}
PROBE = "assistantctl-fleet-probe"  # a name no index has: only the test's wheel answers it
HANDLER = """\
from assistantctl.engine.skills import BaseSkill, SkillContext


class Probe(BaseSkill):
    async def execute(self, context: SkillContext) -> str:
        # imported here, not at the top: the controller that validates the handler has not got it
        import assistantctl_fleet_probe

        return f"probe {assistantctl_fleet_probe.VERSION} from {assistantctl_fleet_probe.__file__}"
"""


@pytest.fixture(scope="module")
def fleet(make_fleet, tmp_path_factory) -> FleetDeployment:
    wheels = tmp_path_factory.mktemp("wheels")
    write_wheel(wheels, PROBE, "1.0")
    write_wheel(wheels, "assistantctl-fleet-legacy", "1.0", ("pydantic<2",))
    folder = tmp_path_factory.mktemp("skill-requirements-spec")
    skill = folder / "skills" / "probe"
    skill.mkdir(parents=True)
    (skill / "handler.py").write_text(HANDLER)
    (skill / "config.yaml").write_text("description: Says which probe it imported.\ncommand: /probe\n")
    (skill / "requirements.txt").write_text(f"{PROBE}==1.0\n")
    deployment = FleetDeployment(
        make_fleet(list(ROLES)), folder, ROLES, env={"PIP_FIND_LINKS": str(wheels)}, python=None
    )
    data = deployment.copy()
    data.setdefault("tools", {})["skill_folders"] = ["skills/probe"]
    deployment.rewrite(data)
    return deployment


def test_a_skills_requirement_is_installed_into_the_hosts_runtime_and_the_skill_imports_it(fleet):
    planned = fleet.run("plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    runtime = re.search(r"\+ engine runtime ([0-9a-f]{12})", planned.stdout).group(1)
    assert runtime != controller_runtime().id, "the skill's requirement must give a runtime of its own"

    applied = fleet.run("apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    venv = f"{fleet.fleet.root}/venvs/{runtime}"
    core = fleet.host("core")
    frozen = core.run(f"{venv}/bin/python", "-m", "pip", "freeze", "--exclude", "assistantctl").stdout.split()
    assert sorted(line.lower().replace("_", "-") for line in frozen) == sorted(
        [*hosts_runtime().requirements, f"{PROBE}==1.0"]
    )
    assert (
        f"{venv}/bin/python -m assistantctl.engine" in core.path("current/supervisor/programs/engine.conf").read_text()
    )

    created = fleet.run("keys", "create", "prober", "--host", "core")
    assert created.returncode == 0, created.stderr
    deadline = time.monotonic() + 10  # the engine picks new keys up within half a second, unless loaded
    while True:
        reply = httpx.post(
            fleet.url("core", "/api/v1/chat"),
            json={"message": "/probe"},
            headers=bearer(created.stdout.strip()),
            timeout=10,
        )
        if reply.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.status_code == 200, reply.text
    assert reply.json()["reply"].startswith(f"probe 1.0 from {venv}/lib/"), reply.text
    assert fleet.run("plan", "--detailed-exitcode").returncode == 0  # resolved once, cached: nothing moves


def test_a_requirement_against_an_engine_pin_stops_plan_before_the_host_changes(fleet):
    requirements = fleet.folder / "skills" / "probe" / "requirements.txt"
    release = fleet.live_release("core")
    requirements.write_text(f"{PROBE}==1.0\nassistantctl-fleet-legacy\n")
    try:
        refused = fleet.run("apply", "--auto-approve")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        for part in ("core: ", "skills/probe/requirements.txt", "depends on pydantic<2", "the engine pins pydantic=="):
            assert part in refused.stderr, refused.stderr
        assert fleet.live_release("core") == release
    finally:
        requirements.write_text(f"{PROBE}==1.0\n")
