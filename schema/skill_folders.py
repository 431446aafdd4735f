"""Read and check the spec's skill folders (`tools.skill_folders`) before anything is rendered.

A skill folder is `<name>/handler.py` (one `BaseSkill` class, assistantctl.engine.skills.folders)
next to `<name>/config.yaml`:

    description: The weather for a city.   # what the model and the user are told
    command: /weather                      # optional: a message starting with it runs the skill
    tool: true                             # the model may call it as the tool skill_<name>
    timeout_seconds: 10
    config:                                # checked against the handler's Config model
      units: metric

A folder may also hold `requirements.txt`: the Python distributions the handler needs, one PEP 508
requirement a line (`name[extras] specifiers ; marker`), with blank lines and `#` comments. pip's
options (`-e`, `-r`, `--index-url`...), URLs and paths are refused: what a host installs comes from
the controller's resolution (assistantctl/runtime.py `runtime_for`), as binary wheels the host
installs offline, never from a skill's say-so.
On SSH hosts with the managed runtime, plan resolves every skill's requirements against the
engine's pins for the host's platform and pins the result into the runtime (a new runtime id); on
hosts that run the engine on their own interpreter (local ones, `python:`), plan only checks that
the interpreter already has them. The controller imports each handler at validate with its own
python, so a handler imports its requirements inside `execute` (or the controller has them too).

Every problem is a `SpecError` at its file, line and column: config.yaml's own keys, its `config`
against the handler's `Config`, a requirements.txt line that is not a requirement, a handler that
does not import or defines no skill. The folder's files (UTF-8 text, Python caches and hidden
files left out) become part of each engine host's bundle, so `plan` shows a changed skill file
like any other.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import Field, ValidationError

from ..engine.settings import SKILL_NAME_PATTERN
from .located_yaml import SpecError, SpecProblem, locate, read_yaml
from .spec import Spec
from .spec.base import Strict
from .types import PositiveSeconds

CONFIG_FILE = "config.yaml"
HANDLER_FILE = "handler.py"
REQUIREMENTS_FILE = "requirements.txt"
# What one folder may weigh: skills are code and settings, not data sets.
MAX_FOLDER_BYTES = 1_000_000


class SkillFolderFile(Strict):
    """config.yaml of a skill folder."""

    description: str = Field(min_length=1, max_length=1000, description="What the skill does, for the model.")
    command: str | None = Field(
        None, pattern=r"^/[a-z][a-z0-9_]{0,31}$", description="A command that runs the skill, e.g. /weather."
    )
    tool: bool = Field(True, description="The model may call the skill as the tool skill_<name>.")
    timeout_seconds: PositiveSeconds = Field(30, description="Seconds one run may take.")
    config: dict[str, Any] = Field(default_factory=dict, description="The handler's settings (its Config model).")


@dataclass(frozen=True)
class SkillFolder:
    """One checked skill folder: what the engine's settings say about it, and its files."""

    name: str
    description: str
    command: str | None
    tool: bool
    timeout_seconds: float
    config: dict[str, Any]
    files: tuple[tuple[str, str], ...]  # (path inside the folder, text), sorted
    requirements: tuple[str, ...] = ()  # requirements.txt's PEP 508 lines, comments left out
    shown: str = ""  # the folder as the spec names it (skills/weather), for messages

    @property
    def source(self) -> str:
        """Where its requirements are declared, for messages."""
        return f"{self.shown}/{REQUIREMENTS_FILE}"

    @property
    def digest(self) -> str:
        """sha256 over the folder's paths and contents: any change to the skill changes it."""
        return files_digest(self.files)


def files_digest(files: Iterable[tuple[str, str]]) -> str:
    """sha256 over (path, text) pairs: shipped code whose digest is in the settings rolls the workers."""
    digest = hashlib.sha256()
    for path, text in files:
        digest.update(path.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


class FolderProblem(Exception):
    """A problem with a folder as a whole: reported at its entry in the spec."""


def attach_skill_folders(spec: Spec, spec_dir: Path, spec_file: str, positions: dict) -> Spec:
    """`spec` with its skill folders read and checked (`Spec.loaded_skill_folders`). Raises
    `SpecError` for the first folder with problems: in its own files, or at its entry in the spec
    (`positions` as `read_yaml` gave them for `spec_file`) when the folder itself is wrong."""
    folders: list[SkillFolder] = []
    for index, shown in enumerate(spec.tools.skill_folders):
        try:
            folders.append(
                read_skill_folder(spec_dir / shown, os.path.normpath(os.path.join(os.path.dirname(spec_file), shown)))
            )
            _no_clashes(folders, spec.tools.skill_folders)
        except FolderProblem as exc:
            line, col = locate(("tools", "skill_folders", index), positions)
            raise SpecError(
                spec_file, [SpecProblem(line, col, f"tools.skill_folders[{index}] {shown}: {exc}")]
            ) from None
    spec = spec.model_copy()
    spec._skill_folders = tuple(folders)
    return spec


def read_skill_folder(folder: Path, shown: str) -> SkillFolder:
    """One folder, checked; `shown` is how messages name it (the path as the spec writes it).
    Raises `SpecError` for a problem in one of its files, `FolderProblem` for the folder itself."""
    name = folder.name
    if not re.match(SKILL_NAME_PATTERN, name):
        raise FolderProblem(f"'{name}' is not a skill name (lowercase letters, digits and _, 40 at most)")
    if not folder.is_dir():
        raise FolderProblem("no such folder")
    for required in (HANDLER_FILE, CONFIG_FILE):
        if not (folder / required).is_file():
            raise FolderProblem(f"a skill folder needs {required}")
    files = read_folder_files(folder)
    base = shown.rstrip("/")
    requirements = requirement_lines(dict(files).get(REQUIREMENTS_FILE, ""), f"{base}/{REQUIREMENTS_FILE}")
    config_name = f"{shown.rstrip('/')}/{CONFIG_FILE}"
    data, positions, problems = read_yaml(dict(files)[CONFIG_FILE], config_name, "give at least a description")
    if problems:
        raise SpecError(config_name, problems)
    try:
        declared = SkillFolderFile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(config_name, [_problem(err, positions) for err in exc.errors()]) from None
    skill = _handler(folder, f"{base}/{HANDLER_FILE}", bool(requirements))
    try:
        skill.Config.model_validate(declared.config)
    except ValidationError as exc:
        raise SpecError(config_name, [_problem(err, positions, ("config",)) for err in exc.errors()]) from None
    unknown = [key for key in declared.config if key not in _config_keys(skill.Config)]
    if unknown:  # a plain BaseModel would drop them: a typo must not pass for a setting
        raise SpecError(config_name, [_unknown_key(("config", key), positions) for key in unknown])
    return SkillFolder(
        name=name,
        description=declared.description,
        command=declared.command,
        tool=declared.tool,
        timeout_seconds=declared.timeout_seconds,
        config=declared.config,
        files=files,
        requirements=requirements,
        shown=base,
    )


def requirement_lines(text: str, shown: str) -> tuple[str, ...]:
    """requirements.txt's requirements as written (comments and blank lines left out). Raises
    `SpecError` at every line that is not a plain PEP 508 requirement of a named distribution."""
    found, problems = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        column = len(raw) - len(raw.lstrip()) + 1
        if not line:
            continue
        if line.startswith("-"):
            why = "pip options (-e, -r, --index-url...) are not allowed: name distributions, one per line"
        else:
            try:
                why = "a URL or path is not allowed: name a distribution" if Requirement(line).url else None
            except InvalidRequirement as exc:
                why = f"not a requirement (PEP 508: name[extras] specifiers ; marker): {str(exc).splitlines()[0]}"
        if why:
            problems.append(SpecProblem(number, column, why))
        else:
            found.append(line)
    if problems:
        raise SpecError(shown, problems)
    return tuple(found)


def read_folder_files(folder: Path) -> tuple[tuple[str, str], ...]:
    """(path inside `folder`, text) of every file to ship, sorted; caches and hidden files left out.
    Raises `FolderProblem` for a link or special file, a file that is not UTF-8, or a folder over
    MAX_FOLDER_BYTES."""
    files, total = [], 0
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_dir() or "__pycache__" in relative.parts or any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_symlink() or not path.is_file():
            raise FolderProblem(f"{relative.as_posix()}: only regular files are shipped")
        if ":" in relative.as_posix():
            why = "a shipped file's name may not hold ':' (a compose bind splits on it)"
            raise FolderProblem(f"{relative.as_posix()}: {why}")
        raw = path.read_bytes()
        total += len(raw)
        if total > MAX_FOLDER_BYTES:
            raise FolderProblem(f"the folder holds more than {MAX_FOLDER_BYTES:,} bytes")
        try:
            files.append((relative.as_posix(), raw.decode("utf-8")))
        except UnicodeDecodeError:
            raise FolderProblem(f"{relative.as_posix()}: not UTF-8 text") from None
    return tuple(files)


def _handler(folder: Path, shown: str, has_requirements: bool = False) -> Any:
    """The folder's BaseSkill class, imported the way the engine will import it."""
    from ..engine.skills.folders import SkillLoadError, load_handler

    try:
        return load_handler(folder)
    except SkillLoadError as exc:
        reason = exc.reason
        if has_requirements and "ModuleNotFoundError" in reason:
            # its requirements go to the hosts, not to the controller that checks the handler here
            reason += f"; import the skill's requirements inside execute(), or install {REQUIREMENTS_FILE} here too"
        raise SpecError(shown, [SpecProblem(exc.line or 1, exc.column or 1, reason)]) from None


def _config_keys(model: type) -> set[str]:
    return {key for name, field in model.model_fields.items() for key in (name, field.alias) if key}


def _unknown_key(loc: tuple, positions: dict) -> SpecProblem:
    line, col = positions.get((*loc[:-1], loc[-1], "__key__"), locate(loc, positions))
    return SpecProblem(line, col, f"unknown key '{'.'.join(str(part) for part in loc)}'")


def _problem(err: dict, positions: dict, under: tuple = ()) -> SpecProblem:
    loc = (*under, *err["loc"])
    dotted = ".".join(str(part) for part in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        return _unknown_key(loc, positions)
    line, col = locate(loc, positions)
    if err["type"] == "missing":
        return SpecProblem(line, col, f"'{dotted}' is required")
    return SpecProblem(line, col, f"{dotted}: {err['msg'].removeprefix('Value error, ')}")


def _no_clashes(folders: list[SkillFolder], shown: list[str]) -> None:
    """The last folder read against the ones before it: one name, one command each."""
    last = folders[-1]
    for folder, where in zip(folders[:-1], shown, strict=False):
        if folder.name == last.name:
            raise FolderProblem(f"a second skill named '{last.name}' (the first: {where})")
        if last.command and folder.command == last.command:
            raise FolderProblem(f"command {last.command} is also the command of {where}")
