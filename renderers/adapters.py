"""The custom adapters' modules found in the spec's folder, shipped as they are to every engine host.

They land in `<release>/adapters/`, which the engine's settings put first on its import path
(renderers/engine.py, `adapter_code`), with a digest of the files: changed adapter code is a
settings change that rolls the engine's workers. Before a release goes live, the host's own
interpreter imports every shipped class and checks it against the adapter interface.
"""

from __future__ import annotations

from ..engine.settings import top_module
from ..schema.spec import Spec
from .base import Files, Renderer, Target

FOLDER = "adapters"
# argv: the staged folder, then the class paths (CLASS_PATH_PATTERN: nothing a shell reads).
_IMPORT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from assistantctl.engine.models.adapters.custom import load_adapter_class; "
    "[load_adapter_class(path) for path in sys.argv[2:]]"
)


def render(target: Target) -> Files:
    return {path: text for module in target.spec.loaded_adapter_modules for path, text in module.files}


def shipped_classes(spec: Spec) -> list[str]:
    """The class paths of the custom models whose module is shipped, sorted."""
    shipped = {module.name for module in spec.loaded_adapter_modules}
    return sorted(
        {
            model.class_path
            for model in spec.models.providers.values()
            if model.class_path and top_module(model.class_path) in shipped
        }
    )


def _import_check(target: Target) -> tuple[str, ...]:
    return (f"{{python}} -c '{_IMPORT}' {{dir}} {' '.join(shipped_classes(target.spec))}",)


RENDERER = Renderer(
    name=FOLDER,
    service="engine",
    render=render,
    applies=lambda t: t.has_role("engine") and bool(t.spec.loaded_adapter_modules),
    extra_checks=_import_check,
)
