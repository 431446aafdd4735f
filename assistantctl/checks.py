"""`render --check`: run each service's own validator on a freshly rendered bundle.

The commands are the same ones apply runs against a staged release on the host; here they run on
the controller against a temporary copy. A validator that is not installed here is reported as
"missing" (the CLI fails on it unless told otherwise). The Python validators (the engine's settings
model, supervisor's parser) need no host at all, so `{python}` is this interpreter for every host,
SSH hosts included: the host's own interpreter only exists on the host.
"""

from __future__ import annotations

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
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode == 0:
        return CheckResult(folder, "passed", "", program)
    return CheckResult(folder, "failed", (result.stdout + result.stderr).strip(), program)
