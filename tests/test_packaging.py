"""The wheel holds every package of the source tree: pyproject.toml lists them by hand (each top
folder is mapped under `assistantctl.`), and a folder missing there would be missing on every host
the engine's runtime is built for, and in every image."""

from __future__ import annotations

import tomllib

from cli_helpers import REPO


def test_every_package_folder_is_in_the_wheels_package_list():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            if "__pycache__" not in relative.parts:
                found.add(".".join((name, *relative.parts)))
    assert sorted(found - set(setuptools["packages"])) == []
    assert sorted(set(setuptools["packages"]) - found) == []
