"""An older commit's engine, runnable next to the current one in the same bench run.

    python bench/reference.py render SPEC OUT   (run with PYTHONPATH=<site>: that tree's renderers)

`Reference.prepare(rev, folder)` exports the commit with `git archive` (no worktree, nothing in the
checkout changes) and builds a package folder `site/assistantctl` whose subpackages point into
that export, as the editable install maps them for the checkout. A process started with
PYTHONPATH=site and a working directory without an `assistantctl` folder imports the old code:
uvicorn's spawned workers inherit both. The old engine's settings are rendered by the old
renderers (`render`), since the settings file is the contract of one version.

cfd51f0^ (the reference of issue 13's budget) was committed with engine/settings.py missing its
last lines (SETTINGS_ENV, RESTART_ONLY, restart_fields), which engine/__main__.py and
engine/runtime.py of that same commit import; cfd51f0 brought them back unchanged. `prepare`
appends them from cfd51f0 when a reference lacks them, and says so: nothing else is patched.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where the package's subpackages live in the repository (pyproject.toml's package-dir).
PACKAGES = ("engine", "schema", "renderers", "templates", "playbooks")
SETTINGS_FIXED_IN = "cfd51f0"
_SETTINGS_TAIL = "# The environment variable naming the settings file to the workers"


@dataclass(frozen=True)
class Reference:
    """An exported commit: `env` and `cwd` make a Python process import its code."""

    rev: str
    commit: str
    folder: Path
    repaired: bool

    @property
    def site(self) -> Path:
        return self.folder / "site"

    @property
    def tree(self) -> Path:
        return self.folder / "tree"

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.site)}

    @property
    def cwd(self) -> Path:
        return self.folder  # `python -m` puts the working directory first on sys.path: no assistantctl here

    @classmethod
    def prepare(cls, rev: str, folder: Path) -> Reference:
        commit = _git("rev-parse", "--short", f"{rev}^{{commit}}").decode().strip()
        tree = folder / "tree"
        tree.mkdir(parents=True)
        archive = _git("archive", "--format=tar", commit, "assistantctl", "assistant.yaml", *PACKAGES)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
        repaired = _repair_settings(tree / "engine" / "settings.py")
        package = folder / "site" / "assistantctl"
        package.mkdir(parents=True)
        for item in (tree / "assistantctl").iterdir():
            (package / item.name).symlink_to(item)
        for name in PACKAGES:
            (package / name).symlink_to(tree / name)
        return cls(rev, commit, folder, repaired)

    def render_settings(self, spec: Path, out: Path) -> None:
        """The engine settings file of `spec`, as this commit's renderers build it."""
        cmd = [sys.executable, str(Path(__file__).resolve()), "render", str(spec), str(out)]
        subprocess.run(cmd, env={**_clean_env(), **self.env}, cwd=self.cwd, check=True)


def _repair_settings(path: Path) -> bool:
    text = path.read_text()
    if "SETTINGS_ENV =" in text:
        return False
    fixed = _git("show", f"{SETTINGS_FIXED_IN}:engine/settings.py").decode()
    path.write_text(text.rstrip("\n") + "\n\n\n" + fixed[fixed.index(_SETTINGS_TAIL) :])
    return True


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _render(spec: str, out: str) -> None:
    from assistantctl.renderers.engine import build_settings  # noqa: PLC0415 - the reference's, via PYTHONPATH
    from assistantctl.schema.loader import load_spec  # noqa: PLC0415
    from assistantctl.targets import targets  # noqa: PLC0415

    (target,) = targets(load_spec(Path(spec)), Path(spec).parent)
    Path(out).write_text(build_settings(target).to_json())


if __name__ == "__main__" and sys.argv[1:2] == ["render"]:
    _render(sys.argv[2], sys.argv[3])
