"""The renderer registry: every module in this package that defines `RENDERER` is one target.

Adding a target is adding a file; nothing here lists them by hand.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Files, Renderer, Target


def all_renderers() -> list[Renderer]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        renderer = getattr(module, "RENDERER", None)
        if isinstance(renderer, Renderer):
            found.append(renderer)
    return sorted(found, key=lambda r: r.name)


def render_target(target: Target, only: set[str] | None = None) -> Files:
    """All files for one host, keyed `<renderer>/<path>`; pure and deterministic."""
    files: Files = {}
    for renderer in all_renderers():
        if only is not None and renderer.name not in only:
            continue
        if not renderer.applies(target):
            continue
        for path, text in renderer.render(target).items():
            files[f"{renderer.name}/{path}"] = text
    return dict(sorted(files.items()))


__all__ = ["Files", "Renderer", "Target", "all_renderers", "render_target"]
