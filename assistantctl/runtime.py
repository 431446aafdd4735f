"""The engine's runtime on an SSH host: a virtualenv holding the controller's own assistantctl and
the exact versions of the engine's dependencies that the controller runs, installed offline from a
wheelhouse the controller builds (hosts need no package index). The controller's assistantctl may
run from a source checkout or be installed as a wheel (`pip install .`): either way the host gets
the same engine code under the same runtime id.

A runtime is named by a hash of what it holds, so a host keeps one virtualenv per version side by
side: installing a new one never disturbs the engine that runs, and a rollback finds its own.

Skill folders' requirements.txt extend it (`runtime_for`): resolved with pip at plan time, for the
host's platform, against the engine's pins as constraints; the extra distributions are pinned into
a runtime of their own (a new id), whose wheelhouse is the engine's plus the extras. A conflict, or a
requirement no index has, is a `SkillRequirementsError` naming the skill folders. What the engine's
own dependencies need only on the host's Python (`interpreter_needs`) extends it the same way.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import assistantctl

# What a host needs to run the engine and its supervisord; the compiler's own dependencies
# (Ansible, Jinja, click...) stay on the controller. Versions and extras come from pyproject.
HOST_DISTRIBUTIONS = frozenset(
    {
        "pydantic",
        "supervisor",
        "starlette",
        "uvicorn",
        "aiosqlite",
        "prometheus-client",
        "aiohttp",
        "asyncpg",
        "redis",
        "orjson",
        "pyjwt",
        "cryptography",
        # the engine's tools (engine/tools/)
        "httpx",
        "jsonschema",
        "simpleeval",
        "pint",
        "python-dateutil",
        "tzdata",
        "trafilatura",
        "lxml-html-clean",
        "mcp",
    }
)
PROJECT = "assistantctl"
RESOLVE_SECONDS = 300  # one pip resolution of the skills' requirements, index round trips included


class RuntimeUnavailable(Exception):
    pass


class SkillRequirementsError(RuntimeUnavailable):
    """Skill folders' requirements that cannot go into a host's engine: the message names the
    folders, the requirements and pip's reason (or what the host's own interpreter lacks)."""


@dataclass(frozen=True)
class Runtime:
    id: str
    pins: tuple[str, ...]  # name==version of every distribution the engine needs, sorted
    source: Path | None  # the source checkout the controller runs from; None when installed from a wheel
    extras: tuple[str, ...] = ()  # name==version the skill folders' requirements add, sorted
    base: Runtime | None = None  # the engine's own runtime, when the skills extend it

    @property
    def requirements(self) -> tuple[str, ...]:
        """What the virtualenv installs from the wheelhouse (requirements.txt)."""
        return (*self.pins, *self.extras)

    def python(self, root: str) -> str:
        return f"{root}/venvs/{self.id}/bin/python"


@functools.cache
def controller_runtime() -> Runtime:
    source = Path(assistantctl.__file__).resolve().parent.parent
    pins = tuple(sorted(f"{name}=={version}" for name, version in host_closure().items()))
    digest = hashlib.sha256("\n".join(pins).encode())
    # The engine's own code decides what runs; the compiler's code never runs on a host. Paths are
    # named as in the source tree (engine/...), so a source checkout and an installed wheel of the
    # same version give the same id.
    engine = Path(importlib.util.find_spec("assistantctl.engine").submodule_search_locations[0])
    # The web page's files (engine/web/) ship with the engine and count like its code.
    for path in sorted([*engine.rglob("*.py"), *(p for p in (engine / "web").glob("*") if p.is_file())]):
        name = "engine/" + path.relative_to(engine).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return Runtime(
        id=digest.hexdigest()[:12], pins=pins, source=source if (source / "pyproject.toml").is_file() else None
    )


def runtime_for(folders, host_python: dict, cache: Path | None = None) -> Runtime:
    """The engine's runtime for a host with `host_python` (facts: version, machine, glibc), extended
    by the requirements of `folders` (each with `source`, where they are declared, and `requirements`:
    schema's SkillFolder, or targets.py's for a tool's own library). Resolved with
    pip once per set of inputs (cached on the controller); raises `SkillRequirementsError`."""
    base = controller_runtime()
    wanted = {folder.source: folder.requirements for folder in folders if folder.requirements}
    if not wanted:
        return base
    extras = _resolved(base, wanted, _target_flags(host_python), cache or cache_folder())
    if not extras:  # everything asked for is already among the engine's pins
        return base
    digest = hashlib.sha256("\n".join((base.id, *extras)).encode()).hexdigest()
    return Runtime(id=digest[:12], pins=base.pins, source=base.source, extras=extras, base=base)


def _resolved(base: Runtime, wanted: dict[str, tuple[str, ...]], flags: list[str], cache: Path) -> tuple[str, ...]:
    """The pins (name==version, sorted) the skills' requirements add to `base` on that platform."""
    every = sorted({line for lines in wanted.values() for line in lines})
    key = hashlib.sha256(json.dumps([base.pins, every, flags]).encode()).hexdigest()[:24]
    saved = cache / "resolutions" / f"{key}.json"
    if saved.exists():
        return tuple(json.loads(saved.read_text()))
    found, why = _pip_resolve(base, every, flags)
    if found is None:
        raise SkillRequirementsError(_culprits(base, wanted, flags, why))
    engine = {pin.split("==")[0] for pin in base.pins} | {PROJECT}
    extras = tuple(sorted(f"{name}=={version}" for name, version in found.items() if name not in engine))
    saved.parent.mkdir(parents=True, exist_ok=True)
    # Failures are not kept (a missing release may appear); a partial file of this process's own, so
    # two plans resolving at once never rename each other's half-written file.
    with tempfile.NamedTemporaryFile("w", dir=saved.parent, prefix=saved.name, suffix=".partial", delete=False) as f:
        f.write(json.dumps(extras))
    Path(f.name).rename(saved)
    return extras


def _pip_resolve(base: Runtime, requirements: list[str], flags: list[str]) -> tuple[dict | None, str]:
    """pip's resolution of `requirements` under the engine's pins ({name: version} of everything it
    would install), or None and pip's reason, shortened."""
    with tempfile.TemporaryDirectory(prefix="assistantctl-resolve-") as tmp:
        constraints, report = Path(tmp, "constraints.txt"), Path(tmp, "report.json")
        constraints.write_text("\n".join(base.pins) + "\n")
        command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run"]
        # --target: pip takes platform flags only for an install elsewhere, and ignores what is installed here
        command += ["--ignore-installed", "--target", str(Path(tmp, "target")), "--only-binary=:all:", *flags]
        command += ["--constraint", str(constraints), "--report", str(report), *requirements]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=RESOLVE_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            return None, f"pip did not answer within {RESOLVE_SECONDS} s"
        if result.returncode != 0:
            return None, _pip_reason(result.stdout, result.stderr)
        installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}, ""


def _pip_reason(stdout: str, stderr: str) -> str:
    """pip's own explanation without its advice: the conflict's causes, or its last error."""
    lines = stdout.splitlines()
    start = next((n for n, line in enumerate(lines) if line.startswith("The conflict is caused by:")), None)
    if start is not None:
        causes = []
        for line in lines[start + 1 :]:
            if not line.strip():
                break
            line = line.strip().replace("The user requested (constraint)", "the engine pins")
            causes.append(line.replace("The user requested", "a skill requires"))
        return "; ".join(causes)
    errors = [line.removeprefix("ERROR: ") for line in stderr.splitlines() if line.startswith("ERROR: ")]
    return errors[-1] if errors else (stderr.strip().splitlines() or ["pip failed"])[-1]


def _culprits(base: Runtime, wanted: dict[str, tuple[str, ...]], flags: list[str], why: str) -> str:
    """Which skill folders to blame, found by resolving each alone, then each pair."""
    python = f"CPython {flags[1]} ({', '.join(flags[flags.index('--platform') + 1 :: 2][:1])})"
    for shown, lines in wanted.items():
        found, alone = _pip_resolve(base, list(lines), flags)
        if found is None:
            return f"{shown} cannot go into the engine's runtime for {python}: {alone}"
    names = list(wanted)
    for later in range(len(names)):
        for earlier in names[:later]:
            found, pair = _pip_resolve(base, [*wanted[earlier], *wanted[names[later]]], flags)
            if found is None:
                both = f"{earlier} and {names[later]}"
                return f"{both} conflict with each other ({python}): {pair}"
    together = ", ".join(names)
    return f"the requirements of {together} conflict together ({python}): {why}"


def host_closure() -> dict[str, str]:
    """Every distribution (name -> installed version) the host needs: HOST_DISTRIBUTIONS as the
    project requires them, and what they require in turn, with the requested extras."""
    top = [
        r for r in map(Requirement, metadata.requires(PROJECT) or ()) if canonicalize_name(r.name) in HOST_DISTRIBUTIONS
    ]
    found: dict[str, str] = {}
    visited: set[tuple[str, str]] = set()
    queue = [(r, "") for r in top]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise RuntimeUnavailable(f"{name} is required by the engine but not installed here") from exc
        found[name] = distribution.version
        for wanted in ("", *sorted(requirement.extras)):
            if (name, wanted) in visited:
                continue
            visited.add((name, wanted))
            queue.extend((Requirement(r), wanted) for r in distribution.requires or ())
    return found


@dataclass(frozen=True)
class InterpreterNeeds:
    """What the engine's pins require on a host's own python3 but not on the controller's (a
    dependency marker such as redis's `async-timeout; python_full_version < "3.11.3"`): it joins
    the host's runtime like a skill folder's requirements."""

    source: str  # for messages
    requirements: tuple[str, ...]


def interpreter_needs(host_python: dict) -> list[InterpreterNeeds]:
    """The requirements of the engine's pinned distributions whose markers hold on a host with
    `host_python` (facts: version, full_version, machine) and that the pins lack; [] when the
    facts do not tell the full version."""
    full = host_python.get("full_version")
    if not full:
        return []
    environment = {
        "python_full_version": full,
        "python_version": host_python["version"],
        "platform_machine": host_python["machine"],
        "implementation_version": full,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "extra": "",
    }
    pinned = {pin.split("==")[0] for pin in controller_runtime().pins}
    lacking = sorted(
        {
            f"{requirement.name}{requirement.specifier}"
            for name in pinned
            for requirement in map(Requirement, metadata.distribution(name).requires or ())
            if requirement.marker is not None
            and requirement.marker.evaluate(environment)
            and canonicalize_name(requirement.name) not in pinned
        }
    )
    return [InterpreterNeeds(f"the engine's dependencies on Python {full}", tuple(lacking))] if lacking else []


def cache_folder() -> Path:
    """Where the controller keeps wheelhouses and resolutions."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "assistantctl"


def wheelhouse(runtime: Runtime, host_python: dict, cache: Path | None = None) -> Path:
    """A tar of the wheels a host with `host_python` (facts: version, machine, glibc) installs the
    runtime from, with its requirements.txt; built once per runtime and host platform. A runtime
    the skills extend starts from its base's wheelhouse and downloads only the extras."""
    cache = cache or cache_folder()
    platform = f"cp{host_python['version'].replace('.', '')}-{host_python['machine']}-glibc{host_python['glibc']}"
    archive = cache / "wheelhouses" / f"{runtime.id}-{platform}.tar"
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    # A folder of this build's own: two controllers (or two CI jobs) building one runtime at once
    # must not download into each other's files; the first finished archive wins the rename.
    with tempfile.TemporaryDirectory(prefix=f"{archive.name}.", dir=archive.parent) as building:
        _build_wheelhouse(runtime, host_python, cache, Path(building), archive)
    return archive


def _build_wheelhouse(runtime: Runtime, host_python: dict, cache: Path, folder: Path, archive: Path) -> None:
    if runtime.base is not None:
        with tarfile.open(wheelhouse(runtime.base, host_python, cache)) as tar:
            tar.extractall(folder, filter="data")
    else:
        project_wheel(runtime, folder)
        # The project goes in without its dependencies: only the engine's are in the wheelhouse.
        (folder / "project.txt").write_text(f"{PROJECT}=={metadata.version(PROJECT)}\n")
    _pip(
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(folder),
        *_target_flags(host_python),
        *(runtime.extras if runtime.base is not None else runtime.pins),
    )
    (folder / "requirements.txt").write_text("\n".join(runtime.requirements) + "\n")
    partial = folder.parent / f"{folder.name}.partial"  # unique: the folder's name is
    with tarfile.open(partial, "w") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    partial.rename(archive)


def project_wheel(runtime: Runtime, folder: Path) -> Path:
    """The controller's own assistantctl as a wheel in `folder`: built from the source checkout it
    runs from, or repacked from the installed distribution's files when it was installed as a wheel."""
    if runtime.source is None:
        return _repack(metadata.distribution(PROJECT), folder)
    with tempfile.TemporaryDirectory(prefix="assistantctl-wheel-") as tmp:
        _pip("wheel", "--no-deps", "--wheel-dir", str(folder), str(_clean_copy(runtime.source, Path(tmp))))
    return folder / f"{PROJECT}-{metadata.version(PROJECT)}-py3-none-any.whl"


# What pip adds to a distribution when it installs a wheel; the rest of .dist-info came in the wheel.
_INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})


def _repack(distribution: metadata.Distribution, folder: Path) -> Path:
    """The installed wheel back as a wheel: the files its RECORD lists under site-packages (not the
    console scripts pip generated, nor bytecode), with a fresh RECORD. Entries are sorted and dated
    1980 so the same installed version gives the same bytes."""
    info = next(f for f in distribution.files if f.name == "WHEEL" and f.parent.name.endswith(".dist-info"))
    tag = next(line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("Tag:"))
    names = sorted(
        f
        for f in distribution.files
        if f.parts[0] != ".."
        and "__pycache__" not in f.parts
        and not (f.parent == info.parent and f.name in _INSTALLER_FILES)
    )
    name = distribution.metadata["Name"].replace("-", "_")
    wheel = folder / f"{name}-{distribution.version}-{tag}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in names:
            data = Path(distribution.locate_file(path)).read_bytes()
            archive.writestr(zipfile.ZipInfo(path.as_posix(), (1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([path.as_posix(), f"sha256={digest}", len(data)])
        listing = f"{info.parent.as_posix()}/RECORD"
        writer.writerow([listing, "", ""])
        archive.writestr(zipfile.ZipInfo(listing, (1980, 1, 1, 0, 0, 0)), record.getvalue(), zipfile.ZIP_DEFLATED)
    return wheel


def _clean_copy(source: Path, into: Path) -> Path:
    """The project's packages without build leftovers: setuptools builds in the tree it is given, and a
    stale build/ there would put deleted modules back into the wheel."""
    project = tomllib.loads((source / "pyproject.toml").read_text())
    shutil.copy2(source / "pyproject.toml", into / "pyproject.toml")
    for folder in sorted(set(project["tool"]["setuptools"]["package-dir"].values())):
        shutil.copytree(source / folder, into / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def _target_flags(host_python: dict) -> list[str]:
    """pip's flags for wheels that run on the host rather than on the controller."""
    major, minor = host_python["version"].split(".")
    machine = host_python["machine"]
    if not host_python.get("glibc"):
        raise RuntimeUnavailable(
            "the host's C library is not glibc, and wheels are fetched for glibc hosts only; "
            "set deploy.hosts[].python to an interpreter on the host that has assistantctl installed"
        )
    flags = ["--python-version", f"{major}.{minor}", "--implementation", "cp"]
    for abi in (f"cp{major}{minor}", "abi3", "none"):
        flags += ["--abi", abi]
    glibc_minor = int(host_python["glibc"].split(".")[1])
    # manylinux2014 (glibc 2.17) stands for the older manylinux1/2010 wheels too (PEP 599).
    platforms = [f"manylinux_2_{v}_{machine}" for v in range(glibc_minor, 16, -1)] + [f"manylinux2014_{machine}"]
    for platform in platforms:
        flags += ["--platform", platform]
    return flags


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeUnavailable(f"pip {args[0]} failed building the engine's wheelhouse:\n{result.stderr.strip()}")
