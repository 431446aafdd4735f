"""`python -m assistantctl.engine --settings PATH`: run the engine's workers under uvicorn.

The process started here is always uvicorn's worker supervisor (engine/workers.py), even for one
worker: it holds the listening socket, so a settings change that needs new processes starts them
before it retires the old ones, and SIGHUP never leaves the port without a worker.
"""

from __future__ import annotations

import signal

# Until uvicorn's supervisor installs its own handler, a SIGHUP (apply signals the engine right
# after `supervisorctl update` may have started it) must not kill the process: it is reading the
# newest settings file anyway.
signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse  # noqa: E402 - after the handler above, so a slow import cannot race a SIGHUP
import os  # noqa: E402

import uvicorn  # noqa: E402

from .http_protocol import KEEP_ALIVE_SECONDS, protocol  # noqa: E402
from .settings import SETTINGS_ENV, EngineSettings, load_settings  # noqa: E402
from .workers import EngineSupervisor, prepare_metrics  # noqa: E402

# How long a new worker may take to start (imports, settings, storage) before a roll gives up on
# it and keeps the old one: generous, since a deploy can land on a busy host.
_WORKER_READY_SECONDS = 30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m assistantctl.engine", description=__doc__)
    parser.add_argument("--settings", required=True, help="path of the rendered settings.json")
    args = parser.parse_args(argv)
    # Absolute but not resolved: through `<root>/current`, a reload reads the release live at that
    # moment, not the one the link pointed at when the engine started.
    path = os.path.abspath(args.settings)
    settings = load_settings(path)  # fail here, with pydantic's message, before forking workers
    os.environ[SETTINGS_ENV] = path
    prepare_metrics(settings)
    EngineSupervisor(path, settings, uvicorn_config).run()


def uvicorn_config(settings: EngineSettings) -> uvicorn.Config:
    """uvicorn's configuration for workers running `settings`."""
    return uvicorn.Config(
        "assistantctl.engine.app:create_app",
        factory=True,
        host=settings.listen_host,
        port=settings.listen_port,
        workers=settings.workers,
        loop="uvloop",
        http=protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),  # type: ignore[arg-type]
        proxy_headers=False,  # the app applies uvicorn's middleware itself, trusting its edges (security/edge.py)
        access_log=False,  # the engine writes its own access lines in the contract format
        log_level="warning",
        timeout_graceful_shutdown=int(settings.request_timeout_seconds) + 5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_worker_healthcheck=_WORKER_READY_SECONDS,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
