"""Turn the spec's hosts into render targets: absolute roots and the interpreter on each host.

`targets` needs no host; `planned_target` adds what only the host's facts tell: the runtime its
skill folders' requirements resolve to on its platform, or that its own interpreter has them.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .renderers import Target
from .runtime import (
    Runtime,
    RuntimeUnavailable,
    SkillRequirementsError,
    controller_runtime,
    interpreter_needs,
    runtime_for,
)
from .schema.spec import Host, Spec

__all__ = ["SkillRequirementsError", "host_root", "planned_target", "target_runtime", "targets"]


def host_root(spec: Spec, host: Host, spec_dir: Path) -> str:
    root = PurePosixPath(spec.deploy.root)
    if root.is_absolute():
        return str(root)
    if host.connection == "local":
        # A relative root sits next to the spec, so `make run` needs no privileges.
        return str((spec_dir / root).resolve())
    return f"/opt/{spec.name}/{root}".replace("/./", "/")


def host_runtime(host: Host) -> Runtime | None:
    """The virtualenv apply installs for the engine: on SSH hosts that name no interpreter of their own."""
    if host.python or host.connection == "local":
        return None
    return controller_runtime()


def host_python(host: Host, root: str, runtime: Runtime | None) -> str:
    if host.python:
        return host.python
    if runtime is not None:
        return runtime.python(root)
    return sys.executable


def targets(spec: Spec, spec_dir: Path, only_hosts: set[str] | None = None) -> list[Target]:
    """One Target per host in the spec (or the `only_hosts` subset, in spec order)."""
    result = []
    for host in spec.deploy.hosts:
        if only_hosts is not None and host.name not in only_hosts:
            continue
        if host.ssh_config:
            # ssh would resolve a relative -F against the working directory; the spec means its own folder.
            host = host.model_copy(update={"ssh_config": str(spec_dir / Path(host.ssh_config).expanduser())})
        root = host_root(spec, host, spec_dir)
        runtime = host_runtime(host)
        python = host_python(host, root, runtime)
        result.append(Target(spec=spec, host=host, root=root, python=python, runtime=runtime and runtime.id))
    return result


@dataclass(frozen=True)
class ToolLibrary:
    """A library only an enabled tool needs (not every engine): it joins a host's runtime like a
    skill folder's requirements."""

    source: str  # where the spec asks for it, for messages
    requirements: tuple[str, ...]


def engine_needs(target: Target) -> list:
    """What this host's engine needs beyond the engine's own pins: each skill folder's
    requirements, and the libraries of the tools it enables (the browser's Playwright)."""
    if not target.has_role("engine"):
        return []
    needs: list = [folder for folder in target.spec.loaded_skill_folders if folder.requirements]
    if "browser" in target.spec.tools.active:
        needs.append(ToolLibrary("tools.enabled: browser", (_browser_library(),)))
    return needs


def _browser_library() -> str:
    """Playwright, the version the controller has (the one the tests ran), else the oldest one
    the engine's browser tool supports."""
    try:
        return f"playwright=={metadata.version('playwright')}"
    except metadata.PackageNotFoundError:
        return "playwright>=1.48"


def target_runtime(target: Target, host_python: dict) -> Runtime:
    """The runtime apply installs on `target` (one with a managed runtime), whose python3 is
    `host_python` (facts): the engine's, extended by what `engine_needs` and by what the engine's
    own dependencies need on that Python."""
    return runtime_for([*engine_needs(target), *interpreter_needs(host_python)], host_python)


def planned_target(target: Target, facts: dict) -> Target:
    """`target` as plan ships it, given the host's `facts`. Raises `SkillRequirementsError` when the
    skill folders' requirements (or an enabled tool's library) conflict, are not to be found, or (on
    a host that runs the engine on its own interpreter, where nothing is installed for it) are
    missing from that interpreter."""
    if target.has_role("monitoring"):  # the alertmanager renderer writes what that version reads
        target = dataclasses.replace(target, alertmanager_version=facts.get("alertmanager_version"))
    folders = engine_needs(target)
    if target.runtime is None:
        if folders:
            _check_interpreter(target, folders)
        return target
    if not folders and not interpreter_needs(facts["python"]):
        return target
    try:
        found = target_runtime(target, facts["python"])
    except RuntimeUnavailable as exc:  # a conflict, or a host no wheels are fetched for
        raise SkillRequirementsError(f"{target.host.name}: {exc}") from None
    return dataclasses.replace(target, runtime=found.id, python=found.python(target.root))


def _check_interpreter(target: Target, folders: list) -> None:
    from . import facts
    from .remote import run_on_host

    wanted = [(folder, Requirement(line)) for folder in folders for line in folder.requirements]
    names = sorted({canonicalize_name(requirement.name) for _, requirement in wanted})
    question = {"python": target.python, "names": names}
    answer = run_on_host(target, facts, {"root": target.root, "distributions": question})
    where = f"{target.host.name}: the engine runs on {target.python}"
    if "error" in answer:
        raise SkillRequirementsError(f"{where}, which cannot be asked for its distributions: {answer['error']}")
    engine = {pin.split("==")[0] for pin in controller_runtime().pins}
    lacking, installable = [], []
    for folder, requirement in wanted:
        if requirement.marker is not None and not requirement.marker.evaluate(answer["environment"]):
            continue
        name = canonicalize_name(requirement.name)
        have = answer["versions"].get(name)
        if have is not None and requirement.specifier.contains(have, prereleases=True):
            continue
        if have is not None and name in engine:  # installing another version would break the engine
            lacking.append(f"{folder.source}: {requirement} ({have} installed, the engine needs it)")
            continue
        lacking.append(f"{folder.source}: {requirement} ({have or 'not'} installed)")
        installable.append(shlex.quote(str(requirement)))
    if not lacking:
        return
    todo = f"install them there ({target.python} -m pip install {' '.join(installable)})" if installable else ""
    if target.host.connection != "local":
        todo += f"{', or ' if todo else ''}leave deploy.hosts[].python out so apply installs them in a runtime"
    raise SkillRequirementsError(
        f"{where}, which assistantctl does not install into, and it lacks what the engine needs here:"
        + "".join(f"\n  {line}" for line in lacking)
        + (f"\n{todo}" if todo else "\nchange the skill's requirements to accept the engine's versions")
    )
