"""Stopping the servers tests start: ask first, then kill one that does not listen."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 15) -> None:
    """Send `sig` to a process still running, wait up to `grace` seconds, then kill it."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
