"""What a renderer is: a pure function from a validated spec (and the host it targets) to files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from posixpath import join

from ..schema.spec import Host, Spec


@dataclass(frozen=True)
class Target:
    """The host a bundle is rendered for, with its paths already resolved to absolute ones."""

    spec: Spec
    host: Host
    root: str  # absolute deploy root on the host
    python: str  # interpreter that runs the engine on the host
    runtime: str | None = None  # id of the engine virtualenv apply installs there (None: python is given)
    # Alertmanager on the host (facts: installed, else the version apt would install); None: unknown
    alertmanager_version: str | None = None

    @property
    def current(self) -> str:
        """The live release; configs refer to each other through this link, never a release id."""
        return join(self.root, "current")

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def has_role(self, role: str) -> bool:
        return role in self.host.roles


Files = dict[str, str]


def _no_secrets(target: Target, values: dict[str, str]) -> Files:
    return {}


@dataclass(frozen=True)
class Renderer:
    """One output target. `render` returns paths relative to the target's own folder.

    `check` is the service's own validator as a command template, run against a staged copy of
    the target's folder before it goes live (`{dir}` that folder, `{root}` the deploy root,
    `{python}` the host's interpreter); the first word is the program that must exist.
    `secret_files` returns the files (mode 0600) holding resolved secret values; it only runs at
    apply time, when the values are known. `shipped` is False for artifacts that `render` writes
    for the user but `apply` never puts on a host (the Docker Compose alternative deployment).
    `extra_checks` are more validators of the same folder that only some hosts need (Logstash's
    where it runs, beside Filebeat's everywhere).
    """

    name: str
    service: str  # which service reads the files (and is reloaded when they change)
    render: Callable[[Target], Files]
    applies: Callable[[Target], bool] = lambda target: True
    check: str | None = None
    secret_files: Callable[[Target, dict[str, str]], Files] = _no_secrets
    shipped: bool = True
    extra_checks: Callable[[Target], tuple[str, ...]] = lambda target: ()
