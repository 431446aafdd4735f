"""The code of `provider: custom` models that lives in the spec's folder, read to be shipped.

`class: faq_adapter:FaqAdapter` names a module. When the spec's folder holds it (`faq_adapter.py`,
or a package folder `faq_adapter/`), that is the module `validate` imported, since the spec's
folder comes first on its path, and it is what every engine host gets: the files land in
`<release>/adapters/` (renderers/adapters.py), which the engine puts first on its Python path. A
module the spec's folder does not hold must be installed where the engine runs.

Python's own finder decides what the spec's folder holds, so what is shipped is what was imported.
A package folder is shipped whole, under the rules of a skill folder: regular UTF-8 files, caches
and hidden files left out, 1 MB at most. A problem is a `SpecError` at the model's `class`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path

from ..engine.settings import top_module
from .located_yaml import SpecError, SpecProblem, locate
from .skill_folders import MAX_FOLDER_BYTES, FolderProblem, files_digest, read_folder_files
from .spec import Spec


@dataclass(frozen=True)
class AdapterModule:
    """One top-level module or package of a custom adapter, as found in the spec's folder."""

    name: str  # the top-level name the class path starts with
    files: tuple[tuple[str, str], ...]  # (path under adapters/, text), sorted


def adapter_code_digest(modules: Iterable[AdapterModule]) -> str:
    """sha256 over every shipped path and text: a changed adapter file changes the settings."""
    return files_digest(file for module in modules for file in module.files)


def attach_adapter_modules(spec: Spec, spec_dir: Path, spec_file: str, positions: dict) -> Spec:
    """`spec` with the modules of its custom models that `spec_dir` holds (`Spec.loaded_adapter_modules`)."""
    found: dict[str, AdapterModule] = {}
    for name, model in spec.models.providers.items():
        if model.provider != "custom" or model.class_path is None:
            continue
        top = top_module(model.class_path)
        if top in found:
            continue
        try:
            module = read_adapter_module(top, spec_dir)
        except FolderProblem as exc:
            line, col = locate(("models", "providers", name, "class", "__key__"), positions)
            raise SpecError(spec_file, [SpecProblem(line, col, f"models.providers.{name}.class: {exc}")]) from None
        if module is not None:
            found[top] = module
    if not found:
        return spec
    spec = spec.model_copy()
    spec._adapter_modules = tuple(found[top] for top in sorted(found))
    return spec


def in_spec_folder(top: str, spec_dir: Path) -> bool:
    return PathFinder.find_spec(top, [str(spec_dir)]) is not None


def shadowed_by(top: str, spec_dir: Path) -> str | None:
    """What else goes by `top`, the name of a module in the spec's folder: the engine imports the
    standard library and its installed packages before its models, so it would never see the
    shipped module; None when nothing does."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "a module of Python's standard library"
    others = [entry for entry in sys.path if Path(entry or ".").resolve() != spec_dir.resolve()]
    found = PathFinder.find_spec(top, others)
    if found is None or found.origin is None:  # a folder without __init__.py elsewhere never wins
        return None
    origin = Path(found.origin)
    return f"an installed module ({origin.parent if found.submodule_search_locations else origin})"


def read_adapter_module(top: str, spec_dir: Path) -> AdapterModule | None:
    """Module or package `top` as Python finds it in `spec_dir` alone; None when it is not there."""
    found = PathFinder.find_spec(top, [str(spec_dir)])
    if found is None:
        return None
    if found.submodule_search_locations:  # a package, or a folder without __init__.py
        (folder,) = (Path(p) for p in found.submodule_search_locations if Path(p).parent == spec_dir)
        try:
            files = read_folder_files(folder)
        except FolderProblem as exc:
            raise FolderProblem(f"package {top}: {exc}") from None
        return AdapterModule(top, tuple((f"{top}/{path}", text) for path, text in files))
    origin = Path(found.origin or "")
    if origin.suffix != ".py":
        raise FolderProblem(f"{origin.name}: only Python source is shipped to the hosts")
    raw = origin.read_bytes()
    if len(raw) > MAX_FOLDER_BYTES:
        raise FolderProblem(f"{origin.name} holds more than {MAX_FOLDER_BYTES:,} bytes")
    try:
        return AdapterModule(top, ((origin.name, raw.decode("utf-8")),))
    except UnicodeDecodeError:
        raise FolderProblem(f"{origin.name}: not UTF-8 text") from None
