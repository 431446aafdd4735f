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

    @property
    def current(self) -> str:
        """The live release; configs refer to each other through this link, never a release id."""
        return join(self.root, "current")

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def has_role(self, role: str) -> bool:
        return role in self.host.roles


Files = dict[str, str]


@dataclass(frozen=True)
class Renderer:
    """One output target. `render` returns paths relative to the target's own folder."""

    name: str
    service: str  # which service reads the files (and is reloaded when they change)
    render: Callable[[Target], Files]
    applies: Callable[[Target], bool] = lambda target: True
