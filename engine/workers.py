"""The engine's parent process: uvicorn's worker supervisor, deciding on SIGHUP how new settings go live.

The parent binds the listening socket once and keeps it for its whole life; workers come and go
behind it, so a settings change never leaves the port without a process accepting on it. On SIGHUP
(`supervisorctl signal HUP engine`, which apply sends when `engine/settings.json` changed) the parent
re-reads the settings file through the path it was given (the `current` link, not the release it
pointed at when the engine started) and:

- when only reloadable settings changed, forwards SIGHUP to every worker, each of which reloads in
  place (`Runtime.reload`): same processes, no connection dropped;
- when a field of `settings.RESTART_ONLY` or the secrets file changed, rolls the workers: each new
  worker is started and answers uvicorn's readiness check (its start-up, settings and storage
  included) before an old one is retired. A retired worker stops accepting, answers what its kept
  connections still send and drains the idle ones (engine/http_protocol.py), so nginx never meets
  a connection closed under it. A new worker count is reached by retiring or adding workers around
  that roll;
- when the listen address or port changed, lets the workers finish and re-executes itself in place
  on the new address (the only change with a moment when nothing accepts: nginx moves with it);
- when the file does not load, keeps the workers (which refuse it too, in the engine's log).

Once every worker runs the same settings (at start, after a roll, after forwarding a reload), the
parent writes their sha256 and the secrets file's to `<data_dir>/engine-workers.json`; loopback
/health shows it, so a deploy waits for all the workers, not for the first new one to answer.

Limits: a worker that is still starting when SIGHUP arrives is not signalled (the default action
of SIGHUP would kill it); it read the file moments before. Everything else is uvicorn's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from uvicorn.config import Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from .settings import WORKERS_STATE_FILE, EngineSettings, restart_fields

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_READY_SECONDS = 1.0  # a started worker answers uvicorn's ping at once; this only bounds a hung one

logger = logging.getLogger("uvicorn.error")


def prepare_metrics(settings: EngineSettings) -> None:
    """With several workers, each its own process, metrics are aggregated through files (metrics.py).

    Set once per parent: workers spawned later (a roll from 1 to 2 workers) inherit the directory.
    """
    if settings.workers > 1 and MULTIPROC_ENV not in os.environ:
        directory = Path(settings.data_dir) / "prometheus"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        os.environ[MULTIPROC_ENV] = str(directory)


class EngineSupervisor(Multiprocess):
    """uvicorn's Multiprocess whose SIGHUP reloads in place or rolls, by what changed in the file."""

    def __init__(
        self,
        settings_path: str,
        settings: EngineSettings,
        config_for: Callable[[EngineSettings], Config],
    ) -> None:
        config = config_for(settings)
        super().__init__(config, [config.bind_socket()])
        self.settings_path = settings_path
        self.settings = settings
        self.settings_digest = hashlib.sha256(Path(settings_path).read_bytes()).hexdigest()
        self.secrets_digest = _secrets_digest(settings)
        self.config_for = config_for
        self.retiring: list[Process] = []  # retired by a roll, draining their connections

    def init_processes(self) -> None:
        """Start the workers and wait for them: a worker that dies while starting (a skill that
        cannot load, a database it cannot open) stops the engine with its error, as a single
        process would, instead of uvicorn respawning it forever behind a parent that looks fine."""
        super().init_processes()
        for process in self.processes:
            ready = process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit)
            if not ready and not process.process.is_alive():
                self.terminate_all()
                self.join_all()
                raise SystemExit(f"engine: worker {process.pid} exited while starting (its error is above)")
        self._publish()

    def handle_hup(self) -> None:
        try:
            raw = Path(self.settings_path).read_bytes()
            settings = EngineSettings.model_validate_json(raw)
            secrets = _secrets_digest(settings)
        except Exception as exc:  # noqa: BLE001 - a bad file must never take the running engine down
            # The workers refuse it too, and say so in the engine's own log, where operators look.
            logger.error("SIGHUP: %s does not load, keeping the running workers: %s", self.settings_path, exc)
            self._reload_in_place()
            return
        digest = hashlib.sha256(raw).hexdigest()
        changed = restart_fields(self.settings, settings) + (["secrets"] if secrets != self.secrets_digest else [])
        if not changed:
            self._reload_in_place()
            self.settings, self.settings_digest = settings, digest
            self._publish()
            return
        logger.warning("SIGHUP: %s changed, rolling the workers", ", ".join(changed))
        if self._roll(settings):
            self.settings, self.settings_digest, self.secrets_digest = settings, digest, secrets
            self._publish()

    def _publish(self) -> None:
        """Say which settings every worker runs (WORKERS_STATE_FILE), replacing the file whole."""
        state = Path(self.settings.data_dir) / WORKERS_STATE_FILE
        state.parent.mkdir(parents=True, exist_ok=True)
        partial = state.with_suffix(".tmp")
        partial.write_text(json.dumps({"settings_sha256": self.settings_digest, "secrets_sha256": self.secrets_digest}))
        os.replace(partial, state)

    def _reload_in_place(self) -> None:
        logger.info("SIGHUP: reloading the workers in place")
        for process in self.processes:
            if process.pid is not None and process.is_ready(_READY_SECONDS):
                os.kill(process.pid, signal.SIGHUP)

    def _roll(self, settings: EngineSettings) -> bool:
        """Replace every worker by one on `settings`; False (and the old ones kept) if one fails."""
        config = self.config_for(settings)
        if (config.host, config.port) != (self.config.host, self.config.port):
            self._restart_on_new_address()
        self.config = config
        prepare_metrics(settings)
        while len(self.processes) > settings.workers:  # fewer: retire the surplus first
            self._retire(self.processes.pop())
        self.processes_num = settings.workers
        for index, old in enumerate(list(self.processes)):
            new = Process(self.config, self.sockets)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                logger.error("SIGHUP: a new worker did not start; the remaining old workers keep serving")
                return False
            self.processes[index] = new
            self._retire(old)
        while len(self.processes) < settings.workers:  # more: add them once the others are new
            process = Process(self.config, self.sockets)
            process.start()
            self.processes.append(process)
        return True

    def _retire(self, process: Process) -> None:
        """Ask a worker to leave while the others serve (SIGUSR1, engine/app.py): it stops accepting
        and drains its kept connections. Not waited for here, so a roll never waits on a drain;
        the supervision loop reaps it."""
        if process.exitcode is None and process.pid is not None:
            os.kill(process.pid, signal.SIGUSR1)
        process.parent_conn.close()
        process.child_conn.close()
        self.retiring.append(process)

    def keep_subprocess_alive(self) -> None:
        for process in [process for process in self.retiring if process.exitcode is not None]:
            process.join()
            self.retiring.remove(process)
        super().keep_subprocess_alive()

    def join_all(self) -> None:
        super().join_all()
        for process in self.retiring:
            process.join()

    def _restart_on_new_address(self) -> None:
        """A new listen address cannot be rolled into: the old socket holds the port (binding
        0.0.0.0 while 127.0.0.1 is bound on it fails), and nginx moves to the new address in the
        same apply. The parent lets its workers finish their requests and re-executes itself in
        place: the same pid, so supervisord sees no exit, binding the new address from scratch."""
        logger.warning("SIGHUP: the listen address changed; restarting the engine on it")
        for process in self.processes:
            process.terminate()
        self.join_all()
        for sock in self.sockets:
            sock.close()
        os.execv(sys.executable, [sys.executable, "-m", "assistantctl.engine", "--settings", self.settings_path])


def _secrets_digest(settings: EngineSettings) -> str | None:
    if not settings.secrets_file:
        return None
    try:
        return hashlib.sha256(Path(settings.secrets_file).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
