"""`assistantctl compose OUT [--build] [--secrets]`: the deployment as a Docker Compose stack.

Writes the stack rendered for the spec's first host (renderers/compose.py) into OUT, with `.env`
naming the image tag (the engine runtime id). `--build` builds the images it needs through the
docker SDK (images.py; the daemon is the one DOCKER_HOST names). `--secrets` resolves the spec's
secrets and writes them under OUT/secrets/ at mode 0600: a deliberate act, never a side effect of
rendering. Then `docker-compose -f OUT/docker-compose.yml up -d` starts it.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from .cli_common import fail, load, secrets, targets

SECRET_MODE = 0o600


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--build", is_flag=True, help="Build the stack's images with the local docker daemon (DOCKER_HOST).")
@click.option(
    "--debian",
    default=None,
    help="The Debian bookworm image the built images start from (default: debian:bookworm-slim).",
)
@click.option(
    "--secrets", "with_secrets", is_flag=True, help="Also write the secret values, mode 0600, under OUT/secrets/."
)
@click.pass_obj
def compose(spec_path: str, out: str, build: bool, debian: str | None, with_secrets: bool) -> None:
    """Write the Docker Compose stack of the spec's first host into OUT (and build its images)."""
    import yaml

    from .bundle import build_bundle
    from .images import BUILT, DEFAULT_DEBIAN, ENGINE_UID, TAG_VARIABLE, ImageBuildError, build_images, image_runtime
    from .overrides import OverrideError, overrides_for_spec
    from .renderers.compose import COMPOSE_FILE, secret_files
    from .runtime import RuntimeUnavailable

    spec = load(spec_path)
    try:
        overrides = overrides_for_spec(spec, Path(spec_path).resolve().parent)
    except OverrideError as exc:
        fail(str(exc))
    target = targets(spec, spec_path, None)[0]
    folder = Path(out)
    bundle = build_bundle(target, only={"compose"}, overrides=overrides)
    written = _write(folder, {f.path.removeprefix("compose/"): f.content for f in bundle.files}, 0o644)
    try:
        runtime = image_runtime()
    except RuntimeUnavailable as exc:
        fail(str(exc))
    (folder / ".env").write_text(f"{TAG_VARIABLE}={runtime.id}\n")
    click.echo(f"{len(written)} files in {folder} (images tagged {runtime.id})")
    if with_secrets:
        values = secrets(spec, spec_path)
        files = {path: text.encode() for path, text in secret_files(target, values).items()}
        engines = _engine_secret_files(yaml.safe_load((folder / COMPOSE_FILE).read_text()), folder)
        for path in _write(folder, files, SECRET_MODE):
            if path.resolve() in engines:
                _hand_to_engine(path, ENGINE_UID)
        click.echo(f"{len(files)} secret files in {folder / 'secrets'} (mode 0600)")
    if build:
        import docker
        import docker.errors

        services = yaml.safe_load((folder / COMPOSE_FILE).read_text())["services"]
        wanted = [name for name in BUILT if name in services]
        try:
            client = docker.from_env()
            for built in build_images(client, wanted, debian or DEFAULT_DEBIAN, runtime, progress=click.echo):
                click.echo(f"  {built.tag}  {built.id[7:19]}")
        except (docker.errors.DockerException, ImageBuildError, RuntimeUnavailable) as exc:
            fail(str(exc))


def _write(folder: Path, files: dict[str, bytes], mode: int) -> list[Path]:
    written = []
    for name, content in sorted(files.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(path, mode)  # an existing file keeps its old mode through os.open
        written.append(path)
    return written


def _engine_secret_files(stack: dict, folder: Path) -> set[Path]:
    """The secret files the stack's engine service mounts (the other services run as root)."""
    mounted = (entry["source"] for entry in stack["services"].get("engine", {}).get("secrets", ()))
    return {(folder / stack["secrets"][name]["file"]).resolve() for name in mounted}


def _hand_to_engine(path: Path, uid: int) -> None:
    """docker-compose bind-mounts file secrets with their owner and mode, so a 0600 file must belong
    to the uid the container reads it as: the engine image's user (the root-run services read anything).
    Only root may give a file away; anyone else keeps it and is told."""
    try:
        os.chown(path, uid, uid)
    except PermissionError:
        click.echo(
            f"warning: {path} stays yours: run as root, or chown it to uid {uid} for the engine to read it", err=True
        )
