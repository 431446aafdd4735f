"""`python -m assistantctl.engine --settings PATH`: run the engine under uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from .app import SETTINGS_ENV
from .settings import load_settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m assistantctl.engine", description=__doc__)
    parser.add_argument("--settings", required=True, help="path of the rendered settings.json")
    args = parser.parse_args(argv)
    path = str(Path(args.settings).resolve())
    settings = load_settings(path)  # fail here, with pydantic's message, before forking workers
    os.environ[SETTINGS_ENV] = path
    if settings.workers > 1:
        # Each worker is its own process: metrics are aggregated through files (see metrics.py).
        directory = Path(settings.data_dir) / "prometheus"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(directory)

    import uvicorn

    from .http_protocol import protocol

    uvicorn.run(
        "assistantctl.engine.app:create_app",
        factory=True,
        host=settings.listen_host,
        port=settings.listen_port,
        workers=settings.workers,
        loop="uvloop",
        http=protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),  # type: ignore[arg-type]
        proxy_headers=False,  # the app applies uvicorn's middleware itself, trusting its edges (engine/edge.py)
        access_log=False,  # the engine writes its own access lines in the contract format
        log_level="warning",
        timeout_graceful_shutdown=int(settings.request_timeout_seconds) + 5,
        timeout_keep_alive=30,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
