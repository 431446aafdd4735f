"""Turn the spec's hosts into render targets: absolute roots and the interpreter on each host."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from .renderers import Target
from .runtime import Runtime, controller_runtime
from .schema.spec import Host, Spec


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
