"""A CI job's view of this repository: a fresh checkout and the environment its `pip install .` runs in.

`checkout(dest)` copies what `git` would check out (tracked and untracked-but-not-ignored files, as
they are in the working tree) so a job's `python3 -m venv .venv && .venv/bin/pip install .` builds
a real, non-editable wheel of this tree. `dependencies_path(dest)` is a folder of links to the
dependencies the repository's own .venv holds, minus assistantctl itself and the packaging tools:
put it on PYTHONPATH and that pip install builds and installs only assistantctl, not the ~60
dependencies again (the project itself is still built from source, with pip's isolated build).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Not dependencies: the project itself (its editable hook included) and the venv's own tools.
NOT_DEPENDENCIES = ("assistantctl", "__editable__", "_distutils_hack", "pip", "setuptools", "wheel", "__pycache__")


def checkout(dest: Path, source: Path = REPO) -> Path:
    """A copy of `source`'s working tree in `dest` (a new folder). Other work may edit the tree
    meanwhile: it is copied again until no listed file changed during the copy, so the copy is one
    state of the tree, as a commit is."""
    for _ in range(10):
        before = _state(source)
        shutil.rmtree(dest, ignore_errors=True)
        for relative in before:
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative, dest / relative)
        if _state(source) == before:
            return dest
    raise RuntimeError(f"{source} kept changing while it was copied")


def _state(source: Path) -> dict[str, tuple[int, int]]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.decode()
    state = {}
    for relative in filter(None, listed.split("\0")):
        path = source / relative
        if path.is_file():  # a tracked file someone just deleted is not there
            stat = path.stat()
            state[relative] = (stat.st_mtime_ns, stat.st_size)
    return state


def dependencies_path(dest: Path) -> Path:
    if dest.is_dir():
        return dest
    site_packages = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_relative_to(sys.prefix))
    dest.mkdir(parents=True)
    for entry in site_packages.iterdir():
        if entry.suffix == ".pth" or entry.name.startswith(NOT_DEPENDENCIES):
            continue
        (dest / entry.name).symlink_to(entry)
    return dest
