"""The skill folders of `tools.skill_folders`, shipped as they are to every engine host.

They land in `<release>/skills/<name>/`, where the engine's settings point (renderers/engine.py),
and are owned by the engine: a changed file is reloaded like a settings change (the settings carry
each folder's digest, so the workers roll onto the new code). Before a release goes live, the
host's own interpreter imports every handler: a skill that needs a library the host lacks fails
there, not in the running engine.
"""

from __future__ import annotations

from .base import Files, Renderer, Target


def render(target: Target) -> Files:
    return {f"{folder.name}/{path}": text for folder in target.spec.loaded_skill_folders for path, text in folder.files}


RENDERER = Renderer(
    name="skills",
    service="engine",
    render=render,
    applies=lambda t: t.has_role("engine") and bool(t.spec.loaded_skill_folders),
    check="{python} -c 'import sys, pathlib; from assistantctl.engine.skills.folders import load_handler; "
    "[load_handler(folder) for folder in sorted(pathlib.Path(sys.argv[1]).iterdir())]' {dir}",
)
