"""A bundle: every file one host needs, with the manifest that names, hashes and owns them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .overrides import NO_OVERRIDES, Overrides
from .renderers import Target, all_renderers
from .renderers.merge import render_with_overrides

MANIFEST = "MANIFEST.json"
FILE_MODE = 0o644
SECRET_MODE = 0o600


@dataclass(frozen=True)
class BundleFile:
    path: str
    content: bytes
    mode: int
    service: str
    sensitive: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Bundle:
    files: tuple[BundleFile, ...]
    checks: tuple[tuple[str, str], ...]  # (renderer folder, command template)

    @property
    def id(self) -> str:
        """Content address of the release: same files, modes and owners give the same id."""
        digest = hashlib.sha256(json.dumps(self.entries(), sort_keys=True).encode()).hexdigest()
        return digest[:12]

    def entries(self) -> dict[str, dict]:
        return {
            f.path: {"sha256": f.sha256, "mode": f"{f.mode:04o}", "service": f.service, "sensitive": f.sensitive}
            for f in self.files
        }

    def manifest(self) -> dict:
        return {"bundle_id": self.id, "files": self.entries()}

    def services(self) -> set[str]:
        return {f.service for f in self.files}

    def write(self, directory: Path) -> None:
        """Write the files and MANIFEST.json under `directory`, with their modes."""
        directory.mkdir(parents=True, exist_ok=True)  # a host may have no file of the chosen renderers
        for f in self.files:
            target = directory / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f.mode)
            with os.fdopen(fd, "wb") as out:
                out.write(f.content)
            os.chmod(target, f.mode)
        (directory / MANIFEST).write_text(json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n")

    def tarball(self) -> bytes:
        """A reproducible tar.gz of the bundle (fixed mtimes and owners) to ship in one transfer."""
        buffer = io.BytesIO()
        members = [*self.files, BundleFile(MANIFEST, self._manifest_bytes(), FILE_MODE, "bundle")]
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
            for f in members:
                info = tarfile.TarInfo(f.path)
                info.size, info.mode, info.mtime = len(f.content), f.mode, 0
                tar.addfile(info, io.BytesIO(f.content))
        return buffer.getvalue()

    def _manifest_bytes(self) -> bytes:
        return (json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n").encode()


def build_bundle(
    target: Target,
    secrets: dict[str, str] | None = None,
    only: set[str] | None = None,
    shipped: bool = False,
    overrides: Overrides = NO_OVERRIDES,
) -> Bundle:
    """Render every applicable target; with `secrets`, also the 0600 files holding their values.

    `shipped` leaves out what never goes to a host (see `Renderer.shipped`): plan and apply use it.
    `overrides` are merged over the rendered files (renderers.merge); one that cannot be applied
    raises `OverrideError`.
    """
    renderers = all_renderers()
    overrides.check_renderers({r.name for r in renderers})
    files: list[BundleFile] = []
    checks: list[tuple[str, str]] = []
    for renderer in renderers:
        if (only is not None and renderer.name not in only) or not renderer.applies(target):
            continue
        if shipped and not renderer.shipped:
            continue
        rendered = render_with_overrides(renderer, target, overrides.for_renderer(renderer.name), overrides.folder)
        for path, text in rendered.items():
            files.append(BundleFile(f"{renderer.name}/{path}", text.encode(), FILE_MODE, renderer.service))
        if secrets is not None:
            for path, text in renderer.secret_files(target, secrets).items():
                files.append(BundleFile(f"{renderer.name}/{path}", text.encode(), SECRET_MODE, renderer.service, True))
        if renderer.check:
            checks.append((renderer.name, renderer.check))
        checks.extend((renderer.name, command) for command in renderer.extra_checks(target))
    return Bundle(tuple(sorted(files, key=lambda f: f.path)), tuple(checks))
