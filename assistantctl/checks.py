"""`render --check`: run each service's own validator on a freshly rendered bundle.

The commands are the same ones apply runs against a staged release on the host; here they run on
the controller against a temporary copy. A validator that is not installed here is reported as
"missing" (the CLI fails on it unless told otherwise). The Python validators (the engine's settings
model, supervisor's parser) need no host at all, so `{python}` is this interpreter for every host,
SSH hosts included: the host's own interpreter only exists on the host.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from .bundle import build_bundle
from .overrides import NO_OVERRIDES, Overrides
from .renderers import Target


@dataclass(frozen=True)
class CheckResult:
    folder: str
    status: Literal["passed", "failed", "missing"]
    output: str = ""
    program: str = ""  # the validator's program, e.g. nginx
    detail: str = ""  # what a pass covered, when the validator says so (a `checked: ...` line)

    @property
    def summary(self) -> str:
        """The status as the CLI prints it, naming what a pass covers where that is less than it sounds."""
        if self.status == "passed" and self.folder in PARTIAL_CHECKS:
            return PARTIAL_CHECKS[self.folder]
        if self.status == "passed" and self.detail:
            return self.detail
        return self.status


# Checks that prove less than "the service runs": said in so many words, never plain "passed".
PARTIAL_CHECKS = {"compose": "config valid (docker-compose config); images not built, stack not started"}
# What a check needs in its environment: the compose file takes its image tag from `.env`, which
# only `assistantctl compose` writes; any tag makes the file checkable.
CHECK_ENVIRONMENT = {"compose": {"ASSISTANTCTL_IMAGE_TAG": "unbuilt"}}


# A validator's stdout line saying what a pass covered; the exit status of a Python validator
# whose package is not installed here (the shell's "command not found").
CHECKED = "checked: "
NOT_INSTALLED = 127

# The folders apply creates on a host before a release is validated (see playbooks/apply.yml).
HOST_FOLDERS = ("releases", "run", "logs", "data", "tmp/nginx")


def run_checks(target: Target, only: set[str] | None = None, overrides: Overrides = NO_OVERRIDES) -> list[CheckResult]:
    """Render the target again under a throwaway deploy root laid out like a host's, and check it.

    Rendered configs name absolute paths under the deploy root (pid files, logs), so they are
    checked where those paths exist rather than against the real host's root.
    """
    with tempfile.TemporaryDirectory(prefix="assistantctl-check-") as tmp:
        root = Path(tmp)
        for folder in HOST_FOLDERS:
            (root / folder).mkdir(parents=True)
        bundle = build_bundle(replace(target, root=str(root)), only=only, overrides=overrides)
        release = root / "current"
        bundle.write(release)
        return [_run(folder, template, release / folder, root) for folder, template in bundle.checks]


def _run(folder: str, template: str, directory: Path, root: Path) -> CheckResult:
    command = template.replace("{dir}", str(directory)).replace("{root}", str(root))
    # -P: a checkout in the working directory (a CI job's) must not shadow the installed package.
    argv = shlex.split(command.replace("{python}", f"{shlex.quote(sys.executable)} -P"))
    program = Path(argv[0]).name
    if shutil.which(argv[0]) is None:
        return CheckResult(folder, "missing", f"{argv[0]} is not installed here", program)
    env = {**os.environ, **CHECK_ENVIRONMENT.get(folder, {})}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
    if result.returncode == 0:
        said = [line.removeprefix(CHECKED) for line in result.stdout.splitlines() if line.startswith(CHECKED)]
        return CheckResult(folder, "passed", "", program, "; ".join(said))
    output = (result.stdout + result.stderr).strip()
    if result.returncode == NOT_INSTALLED and template.startswith("{python}"):
        # A Python validator whose package is missing names it first (assistantctl/kubernetes_check.py).
        return CheckResult(folder, "missing", output, output.split(maxsplit=1)[0] if output else program)
    return CheckResult(folder, "failed", output, program)
