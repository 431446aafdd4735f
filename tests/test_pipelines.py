"""The example CI pipelines really run: assistantctl installed as a wheel, and each job's shell steps
executed in order against SSH test hosts (network namespaces, see tests/fleet/hosts.py)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fleet"))  # the fleet's helpers, shared with tests/fleet

from checkout import REPO, checkout, dependencies_path  # noqa: E402
from ci_files import GITHUB, GITLAB, github_job_env, gitlab_job, load, substitute  # noqa: E402

from cli_helpers import ASSISTANTCTL, default_spec  # noqa: E402
from hosts import Fleet, require_tools  # noqa: E402

PRODUCTION = REPO / "examples" / "production.yaml"
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q ."  # what both pipelines run


def source_version() -> str:
    """`assistantctl --version` of the source checkout (the repository's editable install)."""
    return subprocess.run([ASSISTANTCTL, "--version"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A checkout with assistantctl pip-installed (a wheel, not editable) into its own .venv; its
    `source_version` file is the version the source tree showed when it was copied."""
    tmp = tmp_path_factory.mktemp("wheel-install")
    for _ in range(5):  # other work may edit the tree while it is copied: copy until it held still
        before = source_version()
        shutil.rmtree(tmp / "checkout", ignore_errors=True)
        folder = checkout(tmp / "checkout")
        if source_version() == before:
            break
    (tmp / "source_version").write_text(before)
    env = {**os.environ, "PYTHONPATH": str(dependencies_path(tmp / "dependencies"))}
    result = subprocess.run(["bash", "-c", INSTALL], cwd=folder, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return folder


def run_installed(folder: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(folder.parent / "dependencies"), **(env or {})}
    command = [str(folder / ".venv" / "bin" / "assistantctl"), *args]
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, check=False)


def python_installed(folder: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """`python -c code` of the checkout's .venv, run outside the checkout (whose folders would shadow it)."""
    environment = {**os.environ, "PYTHONPATH": str(folder.parent / "dependencies")}
    command = [str(folder / ".venv" / "bin" / "python"), "-c", code, *args]
    return subprocess.run(command, cwd="/", env=environment, capture_output=True, text=True, check=False)


def test_pip_install_is_a_wheel_not_the_source_tree(installed):
    located = run_installed(installed, "--help")
    assert located.returncode == 0, located.stderr
    probe = "import assistantctl, assistantctl.engine; print(assistantctl.__file__, assistantctl.engine.__file__)"
    where = python_installed(installed, probe)
    assert where.stdout.count("/site-packages/assistantctl/") == 2, where.stdout + where.stderr


def test_installed_wheel_has_the_same_engine_runtime_as_the_source_checkout(installed):
    source = (installed.parent / "source_version").read_text()
    wheel = run_installed(installed, "--version")
    assert wheel.returncode == 0, wheel.stderr
    assert "(engine runtime " in source
    assert wheel.stdout == source


def test_installed_wheel_renders_the_production_example(installed, tmp_path):
    result = run_installed(installed, "-f", str(PRODUCTION), "render", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"edge-1", "edge-2", "engine-1", "monitor-1"}


def test_installed_wheel_checks_the_spec_from_inside_its_checkout(installed):
    """A CI job runs render --check in the checkout, whose assistantctl/ folder is not the package."""
    result = run_installed(installed, "render", "--check", "--allow-missing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check engine: passed" in result.stdout


def test_installed_wheel_builds_the_hosts_engine_wheel_from_itself(installed, tmp_path):
    """What apply ships to an SSH host: the project's wheel, rebuilt from the installed package."""
    build = (
        "import sys; from pathlib import Path; from assistantctl import runtime;"
        "print(runtime.project_wheel(runtime.controller_runtime(), Path(sys.argv[1])))"
    )
    made = python_installed(installed, build, str(tmp_path))
    assert made.returncode == 0, made.stderr
    wheel = Path(made.stdout.strip())
    assert wheel.name == "assistantctl-0.1.0-py3-none-any.whl"
    # It installs (pip checks its RECORD) and its engine starts with what a host installs.
    target = tmp_path / "host"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    subprocess.run(pip, check=True, capture_output=True)
    engine = target / "assistantctl" / "engine"
    assert sorted(p.relative_to(engine) for p in engine.rglob("*.py")) == sorted(
        p.relative_to(installed / "engine") for p in (installed / "engine").rglob("*.py")
    )
    assert (target / "assistantctl" / "playbooks").is_dir()


# --- the pipelines' jobs, executed against SSH test hosts ----------------------------------------
#
# What a CI system does and this machine cannot, replaced explicitly (every other step runs as written):
SUBSTITUTIONS = {
    "actions/checkout@v4": "a copy of this working tree, its assistant.yaml replaced by the fleet's spec",
    "actions/upload-artifact@v4": "`with.path` copied to the run's artifact folder under `with.name`",
    "actions/download-artifact@v4": "the artifact `with.name` copied into the job's workspace",
    "gitlab artifacts + needs": "the plan job's `artifacts.paths` copied into the apply job's workspace",
    "gitlab image python:3.11-slim": "this machine (Debian, Python 3.11)",
    "gitlab package set-up": "not run: the before_script lines ahead of the virtualenv (apt-get, Elastic's "
    "repository and key) would change this machine's apt; it has the packages (test_examples checks the list)",
    "runner ~/.ssh": "an empty folder bind-mounted over ~/.ssh in a private mount namespace per step",
    "ASSISTANT_SECRET_DIR": "a temporary folder instead of /etc/assistant (the fleet spec reads its files there)",
    "PYTHONPATH": "the repository .venv's dependencies, so `pip install .` builds and installs only assistantctl",
    "XDG_CACHE_HOME": "empty: the engine's wheelhouse is built by the installed wheel, not found in a cache",
}
# The production example's secrets, as CI secrets; the fleet spec uses EDGE_SECRET and HISTORY_KEY.
SECRET_NAMES = (
    "OPENAI_API_KEY ANTHROPIC_API_KEY TELEGRAM_BOT_TOKEN TELEGRAM_WEBHOOK_SECRET WECOM_TOKEN WECOM_AES_KEY "
    "WHATSAPP_ACCESS_TOKEN WHATSAPP_VERIFY_TOKEN WHATSAPP_APP_SECRET ALERT_TELEGRAM_BOT_TOKEN GRAFANA_ADMIN_PASSWORD "
    "JWT_SECRET EDGE_SECRET VRRP_PASSWORD POSTGRES_DSN REDIS_URL WECOM_SECRET HISTORY_KEY "
    "BEATS_TLS_CERTIFICATE BEATS_TLS_KEY BEATS_TLS_CA"
).split()
ROLES = {"core": ["engine"], "edge": ["edge"]}


@dataclass
class CiRun:
    """One machine's CI: the fleet, the spec its repository holds, the secrets its CI provides."""

    fleet: Fleet
    tmp: Path
    secrets: dict[str, str]
    source: Path  # the commit the run is for: one copy of the working tree, which every job checks out
    artifacts: dict[str, Path] = field(default_factory=dict)
    agents: list[int] = field(default_factory=list)  # ssh-agents the jobs started

    def spec(self) -> dict:
        data = default_spec()
        data.setdefault("security", {})["edge_secret"] = "${env:EDGE_SECRET}"
        key = f"${{file:{self.tmp / 'secrets' / 'history.key'}}}"
        data["security"]["history_encryption"] = {"enabled": True, "key": key}
        data["deploy"] = {
            "root": self.fleet.root,
            "serial": 2,
            "hosts": [
                {"name": h.name, "address": h.address, "connection": "ssh", "ssh_user": "root", "roles": ROLES[h.name]}
                for h in self.fleet.hosts
            ],
        }
        return data

    def workspace(self, name: str) -> Path:
        folder = self.tmp / "jobs" / name
        shutil.copytree(self.source, folder)
        (folder / "assistant.yaml").write_text(yaml.safe_dump(self.spec(), sort_keys=False))
        return folder

    def environment(self, workspace: Path) -> dict[str, str]:
        home_ssh = self.tmp / "runner-ssh" / workspace.name
        home_ssh.mkdir(parents=True)
        return {
            **os.environ,
            "CI": "true",
            "NO_COLOR": "1",
            "PYTHONPATH": str(dependencies_path(self.tmp / "dependencies")),
            "XDG_CACHE_HOME": str(self.tmp / "cache"),
            "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
            "RUNNER_SSH": str(home_ssh),
        }

    def shell(self, script: str, workspace: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        """`script` as a CI step runs it: bash -eo pipefail in the workspace, with its own ~/.ssh."""
        path = workspace.parent / f"{workspace.name}-step.sh"
        path.write_text(script)
        mount = 'mount --bind "$RUNNER_SSH" "$1" && exec bash --noprofile --norc -eo pipefail "$2"'
        command = ["unshare", "--mount", "--propagation", "private", "bash", "-c", mount, "_", RUNNER_SSH, str(path)]
        return subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, timeout=600, check=False)

    def stop_agent(self, pid: str | None) -> bool:
        """Kill an ssh-agent a job left behind; True when the job had stopped it itself."""
        if not pid:
            return True
        deadline = time.monotonic() + 5  # `ssh-agent -k` signals it; it may take a moment to go
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return True
            time.sleep(0.1)
        os.kill(int(pid), signal.SIGTERM)
        return False


RUNNER_SSH = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh")  # where ssh looks, whatever $HOME says


def run_github_job(ci: CiRun, job: str, event: str) -> str:
    """Run one job of the GitHub workflow for `event`; returns its output, asserts every step passed."""
    workflow = load(GITHUB)
    spec = workflow["jobs"][job]
    expected_if = None if job == "plan" else "github.event_name == 'push'"
    assert spec.get("if") == expected_if
    ref = "refs/pull/7/merge" if event == "pull_request" else "refs/heads/main"
    context = {
        "github": {"event_name": event, "actor": "pipeline-test", "ref": ref, "sha": "0" * 40},
        "secrets": ci.secrets,
    }
    workspace = ci.tmp / "jobs" / f"github-{event}-{job}"
    env = ci.environment(workspace)
    env_file = ci.tmp / f"github-{event}-{job}.env"
    env_file.touch()
    env |= {"GITHUB_ENV": str(env_file), "RUNNER_TEMP": str(ci.tmp / "runner-temp"), "GITHUB_WORKSPACE": str(workspace)}
    (ci.tmp / "runner-temp").mkdir(exist_ok=True)
    env |= github_job_env(workflow, job, context)
    env["ASSISTANT_SECRET_DIR"] = str(ci.tmp / "secrets")
    output, failed = [], None
    for step in spec["steps"]:
        if failed and step.get("if") != "always()":
            continue
        uses = step.get("uses")
        if uses:
            assert uses in SUBSTITUTIONS, f"a step this test cannot run and does not substitute: {uses}"
            if uses.startswith("actions/checkout"):
                ci.workspace(workspace.name)
            elif uses.startswith("actions/upload-artifact"):
                folder = ci.tmp / "artifacts" / f"{event}-{step['with']['name']}"
                folder.mkdir(parents=True)
                for path in workspace.glob(step["with"]["path"]):
                    shutil.copy2(path, folder)
                ci.artifacts[f"{event}-{step['with']['name']}"] = folder
            else:
                for path in ci.artifacts[f"{event}-{step['with']['name']}"].iterdir():
                    shutil.copy2(path, workspace)
            continue
        step_env = {**env, **dotenv(env_file)}
        step_env |= {k: substitute(str(v), context) for k, v in step.get("env", {}).items()}
        started = time.monotonic()
        result = ci.shell(substitute(step["run"], context), workspace, step_env)
        seconds = time.monotonic() - started
        output.append(f"$ {step.get('name') or step['run']} ({seconds:.0f} s)\n{result.stdout}{result.stderr}")
        if result.returncode != 0 and not failed:
            failed = f"step failed (rc {result.returncode}): {step.get('name') or step['run']}"
    stopped = ci.stop_agent(dotenv(env_file).get("SSH_AGENT_PID"))
    assert not failed, failed + "\n" + "\n".join(output)
    assert stopped, "the job left its ssh-agent running"
    return "\n".join(output)


def run_gitlab_job(ci: CiRun, job: str, needs_from: Path | None = None) -> str:
    """Run one GitLab job as a runner does: before_script and script in one shell, after_script in another."""
    pipeline = load(GITLAB)
    spec = gitlab_job(pipeline, job)
    assert spec["image"].startswith("python:3.11-slim")
    workspace = ci.workspace(f"gitlab-{job}")
    for name in spec.get("needs", []):
        for path in pipeline[name]["artifacts"]["paths"]:
            shutil.copy2(needs_from / path, workspace / path)
    env = (
        ci.environment(workspace)
        | ci.secrets
        | {"GITLAB_USER_LOGIN": "pipeline-test", "CI_PROJECT_DIR": str(workspace)}
    )
    env |= {name: re.sub(r"\$(\w+)", lambda m: env[m.group(1)], value) for name, value in pipeline["variables"].items()}
    env["ASSISTANT_SECRET_DIR"] = str(ci.tmp / "secrets")
    first_own = next(i for i, line in enumerate(spec["before_script"]) if line.startswith("python3 -m venv"))
    package_setup, lines = spec["before_script"][:first_own], spec["before_script"][first_own:]
    # Only package set-up is substituted: nothing after it, and nothing in it but packages.
    assert package_setup and all(re.search(r"apt|gpg|elastic", line) for line in package_setup), package_setup
    main = ci.shell("\n".join(lines + spec["script"]), workspace, env)
    after = ci.shell("\n".join(spec.get("after_script", [])), workspace, env)
    agent = workspace / ".ssh-agent.pid"
    assert ci.stop_agent(agent.read_text().strip() if agent.exists() else None), "the job left its ssh-agent running"
    output = main.stdout + main.stderr + after.stdout + after.stderr
    assert main.returncode == 0 and after.returncode == 0, output
    return output


def dotenv(path: Path) -> dict[str, str]:
    """The NAME=value lines a step appended to $GITHUB_ENV."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="module")
def ci(tmp_path_factory) -> Iterator[CiRun]:
    require_tools()
    os.makedirs(RUNNER_SSH, mode=0o700, exist_ok=True)  # the mount point of each step's own ~/.ssh
    tmp = tmp_path_factory.mktemp("ci")
    fleet = Fleet(tmp / "fleet", list(ROLES))
    (tmp / "fleet").mkdir()
    try:
        fleet.start()
        secrets = {name: f"ci-{name.lower()}" for name in SECRET_NAMES}
        secrets["SSH_PRIVATE_KEY"] = fleet.key.read_text()
        secrets["SSH_KNOWN_HOSTS"] = fleet.known_hosts.read_text()
        yield CiRun(fleet, tmp, secrets, checkout(tmp / "source"))
    finally:
        fleet.close()


def serves_health(ci: CiRun) -> int:
    """GET /health through the edge's nginx, which proxies to the engine on core (core's engine
    itself answers only the edges: the edge secret)."""
    edge = next(host for host in ci.fleet.hosts if host.name == "edge")
    return httpx.get(f"http://{edge.address}:8080/health", timeout=10).status_code


@pytest.mark.slow
def test_github_workflow_plans_a_pull_request_and_deploys_the_saved_plan_on_merge(ci):
    start = time.monotonic()
    review = run_github_job(ci, "plan", "pull_request")
    assert "engine runtime to install on 2 host(s) (2 of 2 host(s) changing)." in review, review
    assert (ci.artifacts["pull_request-plan"] / "plan.bin").is_file()
    assert not any((host.files / "current").exists() for host in ci.fleet.hosts)  # a plan changes nothing
    run_github_job(ci, "plan", "push")
    deploy = run_github_job(ci, "apply", "push")
    assert "Apply complete: 2 of 2 host(s) changed." in deploy, deploy
    assert serves_health(ci) == 200
    print(f"\nGitHub workflow (PR plan, merge plan + apply): {time.monotonic() - start:.0f} s\n{deploy}")


@pytest.mark.slow
def test_gitlab_pipeline_plans_and_applies_the_saved_plan(ci):
    start = time.monotonic()
    ci.secrets["EDGE_SECRET"] = "rotated-by-the-gitlab-run"  # something to deploy after the GitHub run
    plan = run_gitlab_job(ci, "plan")
    deploy = run_gitlab_job(ci, "apply", needs_from=ci.tmp / "jobs" / "gitlab-plan")
    assert "Apply complete: 2 of 2 host(s) changed." in deploy, plan + deploy
    assert serves_health(ci) == 200
    print(f"\nGitLab pipeline (plan + apply): {time.monotonic() - start:.0f} s")
