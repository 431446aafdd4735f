"""The example specs validate, and the example pipelines only use commands and flags that exist."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from assistantctl.bundle import build_bundle
from assistantctl.cli import main
from assistantctl.schema.loader import load_spec
from assistantctl.schema.secrets import secret_refs
from assistantctl.schema.types import SECRET_REF
from assistantctl.targets import targets

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PIPELINES = sorted((EXAMPLES / "ci").glob("*.yml"))


@pytest.mark.parametrize("spec", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_are_valid(spec):
    load_spec(spec)


def invocations(pipeline: Path) -> list[list[str]]:
    found = []
    for line in pipeline.read_text().splitlines():
        match = re.search(r"assistantctl ([^|;&]+)", line)
        if match and not line.lstrip().startswith("#"):
            found.append(shlex.split(match.group(1).split(" || ")[0]))
    return found


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_pipelines_call_real_commands_with_real_flags(pipeline):
    yaml.safe_load(pipeline.read_text())
    calls = invocations(pipeline)
    assert {call[0] for call in calls} >= {"validate", "plan", "apply"}
    for name, *args in calls:
        command = main.commands.get(name)
        assert isinstance(command, click.Command), f"{pipeline.name}: no command {name}"
        known = {opt for param in command.params for opt in param.opts}
        for arg in args:
            if arg.startswith("-"):
                assert arg in known, f"{pipeline.name}: `{name}` has no option {arg}"


# --- what the pipelines must hold for the production example (they run for real in test_pipelines.py)

sys.path.insert(0, str(Path(__file__).parent / "fleet"))
from ci_files import GITHUB, GITLAB, commands, evaluate, gitlab_job, load  # noqa: E402

PRODUCTION = EXAMPLES / "production.yaml"
# The checkers (renderers/elk.py) that come from Elastic's APT repository, and their packages.
ELASTIC_CHECKERS = {"filebeat": "filebeat", "/usr/share/logstash/bin/logstash": "logstash"}


def production_secrets() -> tuple[set[str], set[str]]:
    """The ${env:NAME} names and the ${file:PATH} paths of the production example."""
    refs = [SECRET_REF.match(ref).groups() for ref in secret_refs(load_spec(PRODUCTION)).values()]
    return {name for kind, name in refs if kind == "env"}, {name for kind, name in refs if kind == "file"}


def test_github_exports_every_env_secret_of_the_example_from_the_repository_secrets():
    workflow = load(GITHUB)
    env_names, _ = production_secrets()
    assert len(env_names) >= 15
    exported = {name for name, value in workflow["env"].items() if value == f"${{{{ secrets.{name} }}}}"}
    assert env_names <= exported, f"not exported: {sorted(env_names - exported)}"


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_pipelines_write_every_file_secret_of_the_example_where_the_spec_reads_it(pipeline):
    data = load(pipeline)
    folder = (data["env"] if pipeline == GITHUB else data["variables"])["ASSISTANT_SECRET_DIR"]
    _, paths = production_secrets()
    assert paths and {str(Path(p).parent) for p in paths} == {folder}
    script = "\n".join(commands(pipeline))
    for path in paths:
        assert re.search(rf"> \"\$ASSISTANT_SECRET_DIR/{re.escape(Path(path).name)}\"", script), path


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_pipelines_load_the_ssh_key_into_an_agent_and_pin_the_known_hosts(pipeline):
    script = "\n".join(commands(pipeline))
    assert re.search(r'"\$SSH_PRIVATE_KEY" \| ssh-add -q -', script)
    assert re.search(r'"\$SSH_KNOWN_HOSTS" > ~/.ssh/known_hosts', script)


def test_github_pull_request_plans_and_deploys_have_separate_concurrency_groups():
    concurrency = load(GITHUB)["concurrency"]
    group = concurrency["group"].strip("${} ")
    cancel = concurrency["cancel-in-progress"].strip("${} ")
    pull_request = {"github": {"event_name": "pull_request", "ref": "refs/pull/7/merge"}}
    push = {"github": {"event_name": "push", "ref": "refs/heads/main"}}
    assert evaluate(group, pull_request) == "assistant-plan-refs/pull/7/merge"
    assert evaluate(group, push) == "assistant-deploy"
    assert evaluate(cancel, pull_request) is True  # a newer push to the PR replaces its plan
    assert evaluate(cancel, push) is False  # a deploy is never cancelled midway


def test_gitlab_deploys_queue_apart_from_merge_request_plans():
    pipeline = load(GITLAB)
    plan, apply = gitlab_job(pipeline, "plan"), gitlab_job(pipeline, "apply")
    assert "resource_group" not in plan and apply["resource_group"] == "assistant-deploy"
    merge_request = next(rule for rule in plan["rules"] if "merge_request_event" in rule["if"])
    assert merge_request["interruptible"] is True
    assert not apply.get("interruptible") and pipeline["workflow"]["auto_cancel"]["on_new_commit"] == "interruptible"


def test_pull_request_plans_get_no_write_token_and_no_production_environment():
    workflow = load(GITHUB)
    assert workflow["permissions"] == {"contents": "read"}
    assert "environment" not in workflow["jobs"]["plan"] and workflow["jobs"]["apply"]["environment"] == "production"
    assert workflow["jobs"]["apply"]["if"] == "github.event_name == 'push'"
    pipeline = load(GITLAB)
    assert "environment" not in gitlab_job(pipeline, "plan") and gitlab_job(pipeline, "apply")["environment"]
    assert all("merge_request" not in rule.get("if", "") for rule in gitlab_job(pipeline, "apply")["rules"])


def test_deploy_jobs_apply_the_plan_the_plan_job_saved():
    workflow = load(GITHUB)
    plan_steps, apply_steps = (workflow["jobs"][job]["steps"] for job in ("plan", "apply"))
    upload = next(s for s in plan_steps if s.get("uses", "").startswith("actions/upload-artifact"))
    download = next(s for s in apply_steps if s.get("uses", "").startswith("actions/download-artifact"))
    assert download["with"]["name"] == upload["with"]["name"] and upload["with"]["path"] == "plan.*"
    assert any(" -o plan.bin" in s.get("run", "") for s in plan_steps)
    assert ".venv/bin/assistantctl apply plan.bin" in [s.get("run") for s in apply_steps]
    pipeline = load(GITLAB)
    assert "plan.bin" in gitlab_job(pipeline, "plan")["artifacts"]["paths"]
    assert gitlab_job(pipeline, "apply")["needs"] == ["plan"]
    assert ".venv/bin/assistantctl apply plan.bin" in gitlab_job(pipeline, "apply")["script"]


def test_gitlab_image_installs_the_package_of_every_validator_render_check_runs():
    """Derived: the validators render --check runs for the production example, and the Debian
    package each comes from on this machine (Debian too, as the python:3.11-slim image is)."""
    spec = load_spec(PRODUCTION)
    programs = set()
    for target in targets(spec, PRODUCTION.parent):
        for _, template in build_bundle(target).checks:
            program = shlex.split(template)[0]
            if program != "{python}":
                programs.add(program)
    assert {"nginx", "promtool", "amtool"} <= programs
    lines = gitlab_job(load(GITLAB), "apply")["before_script"]
    installed = " ".join(line for line in lines if "apt-get install" in line).split()
    for program in sorted(programs):
        if program in ELASTIC_CHECKERS:  # not installable here: Elastic's repository is not reachable
            package = ELASTIC_CHECKERS[program]
        else:
            found = subprocess.run(
                ["dpkg", "-S", os.path.realpath(shutil.which(program))], capture_output=True, text=True, check=False
            )
            assert found.returncode == 0, f"{program}: {found.stderr}"
            package = found.stdout.split(":", 1)[0]
        assert package in installed, f"{program} comes from {package}, which the GitLab job does not install"
