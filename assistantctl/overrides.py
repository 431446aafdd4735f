"""Read the user's override files once, on the controller, into an immutable mapping.

`<spec dir>/<deploy.overrides>/<renderer>/<path>` is laid over the rendered `<renderer>/<path>`
by `renderers.merge` when a bundle is built; this module reads the folder and checks, before
anything is planned, that every file in it applies somewhere. A missing folder means no overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .renderers.merge import OverrideError, check_matched
from .schema.spec import Spec

__all__ = ["NO_OVERRIDES", "OverrideError", "Overrides", "load_overrides", "overrides_for_spec", "read_overrides"]


@dataclass(frozen=True)
class Overrides:
    """Override files keyed `<renderer>/<path>`; `folder` is how error messages name the folder."""

    folder: str = "overrides"
    files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def for_renderer(self, name: str) -> dict[str, str]:
        """This renderer's overrides, keyed by the path inside its folder."""
        prefix = f"{name}/"
        return {path.removeprefix(prefix): text for path, text in self.files.items() if path.startswith(prefix)}

    def renderers(self) -> set[str]:
        """The renderer folders that hold at least one file."""
        return {path.split("/", 1)[0] for path in self.files}

    def check_renderers(self, known: set[str]) -> None:
        """Refuse a folder that names no renderer (a typo would otherwise never apply)."""
        for name in sorted(self.renderers() - known):
            raise OverrideError(f"{self.folder}/{name}/: '{name}' is not a renderer; known: {', '.join(sorted(known))}")

    def __bool__(self) -> bool:
        return bool(self.files)


NO_OVERRIDES = Overrides()


def read_overrides(folder: Path, shown: str) -> Overrides:
    """Every file under `folder` as UTF-8 text; `shown` names the folder in error messages."""
    if not folder.exists():
        return Overrides(shown)
    if not folder.is_dir():
        raise OverrideError(f"{shown}: deploy.overrides must name a folder")
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        relative = path.relative_to(folder).as_posix()
        if "/" not in relative:
            raise OverrideError(f"{shown}/{relative}: overrides go in a renderer's folder, e.g. {shown}/nginx/...")
        try:
            files[relative] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise OverrideError(f"{shown}/{relative}: not UTF-8 text") from None
        except OSError as exc:
            raise OverrideError(f"{shown}/{relative}: {exc.strerror}") from None
    return Overrides(shown, MappingProxyType(files))


def load_overrides(spec: Spec, spec_dir: Path) -> Overrides:
    """The spec's overrides folder (`deploy.overrides`; a relative path sits next to the spec)."""
    configured = Path(spec.deploy.overrides)
    return read_overrides(configured if configured.is_absolute() else spec_dir / configured, str(configured))


def overrides_for_spec(spec: Spec, spec_dir: Path) -> Overrides:
    """`load_overrides`, then proof that each file applies: its renderer runs on some host, some
    host renders the file it names, and every host that renders it accepts the merge. Raises
    `OverrideError` naming the first bad file."""
    from .bundle import build_bundle
    from .renderers import all_renderers
    from .targets import targets

    overrides = load_overrides(spec, spec_dir)
    if not overrides:
        return overrides
    everywhere = targets(spec, spec_dir)
    renderers = all_renderers()
    overrides.check_renderers({r.name for r in renderers})
    used = {r.name for r in renderers for t in everywhere if r.applies(t)}
    for name in sorted(overrides.renderers() - used):
        raise OverrideError(f"{overrides.folder}/{name}/: no host of this spec renders {name}")
    rendered: dict[str, set[str]] = {}
    for target in everywhere:
        for file in build_bundle(target, overrides=overrides).files:
            renderer, _, path = file.path.partition("/")
            rendered.setdefault(renderer, set()).add(path)
    check_matched(overrides.files, rendered, overrides.folder)
    return overrides
