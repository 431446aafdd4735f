"""The container images of the Docker Compose stack, built on this machine through the docker SDK.

No public image is used for what the stack builds: every image starts from one Debian image
(`debian`, by default `debian:bookworm-slim`; any bookworm root file system imported with `docker
import` works, which is how the tests run without a registry), gets one shared apt layer
(`assistantctl/base`), and adds its service's Debian package: the packages apt installs on the
hosts. The engine image installs the engine's runtime from the controller's wheelhouse
(runtime.py), so a container runs the very pins and engine code an SSH host gets. Every image is
tagged with that runtime's id; the compose file names its images `assistantctl/<service>` with the
tag taken from `.env` (`ASSISTANTCTL_IMAGE_TAG`), which `assistantctl compose` writes.

Builds use the host's network (`network_mode="host"`): apt must reach its mirror, and the daemon
may run without a default bridge. Docker's layer cache makes a rebuild of unchanged images cheap.
"""

from __future__ import annotations

import io
import platform
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .renderers.templating import render_template
from .runtime import Runtime, interpreter_needs, runtime_for, wheelhouse

REPOSITORY = "assistantctl"
TAG_VARIABLE = "ASSISTANTCTL_IMAGE_TAG"
DEFAULT_DEBIAN = "debian:bookworm-slim"
# Debian bookworm's python3 and C library: the wheelhouse is fetched for them.
DEBIAN_PYTHON = {"version": "3.11", "full_version": "3.11.2", "glibc": "2.36"}
ENGINE_UID = 10001  # the engine image's non-root user; secret files are handed to it
ROOT = "/srv/assistant"  # the deploy root inside the containers (renderers/compose.py)
# The services whose image is built here, in build order after the base.
BUILT = ("engine", "nginx", "prometheus", "alertmanager", "node-exporter")


class ImageBuildError(Exception):
    """A build failed; the message ends with the last lines of the build's log."""


@dataclass(frozen=True)
class Built:
    service: str
    tag: str
    id: str


def image_runtime() -> Runtime:
    """The runtime the images hold: the one an SSH host on Debian bookworm gets (the controller's,
    plus what its pins need only on Debian's python3, e.g. redis's async-timeout below 3.11.3),
    under the same id."""
    debian = debian_python()
    return runtime_for(interpreter_needs(debian), debian)


def debian_python() -> dict:
    """What facts would report of bookworm's python3 on this machine's architecture."""
    return {**DEBIAN_PYTHON, "machine": platform.machine()}


def image_name(service: str) -> str:
    return f"{REPOSITORY}/{service}"


def image_tag(service: str, runtime: Runtime) -> str:
    return f"{image_name(service)}:{runtime.id}"


def dockerfile(service: str, runtime: Runtime, debian: str = DEFAULT_DEBIAN) -> str:
    """The Dockerfile of `service` (or of "base"), filled for `runtime`."""
    return render_template(
        f"compose/{service}.Dockerfile.j2",
        debian=debian,
        base=image_tag("base", runtime),
        runtime=runtime.id,
        uid=ENGINE_UID,
        root=ROOT,
    )


def build_images(
    client,
    services: Iterable[str],
    debian: str = DEFAULT_DEBIAN,
    runtime: Runtime | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> list[Built]:
    """Build the base image, then each of `services` (names from BUILT), tagged with the runtime
    id. `client` is a `docker.DockerClient`. Raises `ImageBuildError` with the build's log tail."""
    runtime = runtime or image_runtime()
    unknown = set(services) - set(BUILT)
    if unknown:
        raise ValueError(f"no image is built for {', '.join(sorted(unknown))}")
    built = [_build(client, "base", runtime, debian, progress)]
    for service in (s for s in BUILT if s in set(services)):
        built.append(_build(client, service, runtime, debian, progress))
    return built


def _build(client, service: str, runtime: Runtime, debian: str, progress: Callable[[str], None]) -> Built:
    import docker.errors

    tag = image_tag(service, runtime)
    progress(f"building {tag}")
    context = _context(dockerfile(service, runtime, debian), _wheels(runtime) if service == "engine" else {})
    try:
        image, _ = client.images.build(
            fileobj=context, custom_context=True, tag=tag, network_mode="host", rm=True, forcerm=True, pull=False
        )
    except docker.errors.BuildError as exc:
        lines = [str(entry.get("stream") or entry.get("error") or "").rstrip() for entry in exc.build_log]
        tail = "\n".join(line for line in lines if line)[-3000:]
        raise ImageBuildError(f"building {tag} failed: {exc.msg}\n{tail}") from None
    return Built(service=service, tag=tag, id=image.id)


def _wheels(runtime: Runtime) -> dict[str, bytes]:
    """The wheelhouse split for the Dockerfile: `project/` holds assistantctl's own wheel, `wheels/`
    the pinned dependencies and requirements.txt, so a change of engine code alone leaves the
    dependencies' layer cached (docker compares copied files by content)."""
    archive = wheelhouse(runtime, debian_python())
    files = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name == "project.txt":
                continue
            own = member.name.startswith(("assistantctl-", "assistantctl_"))
            files[f"{'project' if own else 'wheels'}/{member.name}"] = tar.extractfile(member).read()
    return files


def _context(dockerfile_text: str, files: dict[str, bytes]) -> io.BytesIO:
    """A build context as an uncompressed tar: the Dockerfile and `files` (name -> content), with
    fixed dates so docker's cache sees only content."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted({"Dockerfile": dockerfile_text.encode(), **files}.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer
