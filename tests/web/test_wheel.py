"""The page ships with the engine: SSH hosts run the engine from a wheel of assistantctl (a local
host runs the controller's own interpreter), so the wheel must carry engine/web/."""

from __future__ import annotations

import zipfile
from pathlib import Path

from assistantctl.runtime import controller_runtime, project_wheel
from cli_helpers import REPO


def test_the_wheel_hosts_install_carries_the_web_page(tmp_path: Path) -> None:
    wheel = project_wheel(controller_runtime(), tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        for name in ("index.html", "app.js", "app.css"):
            assert archive.read(f"assistantctl/engine/web/{name}") == (REPO / "engine" / "web" / name).read_bytes()
