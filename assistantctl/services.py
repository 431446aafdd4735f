"""Stop the services of a local host's live release (`assistantctl stop`)."""

from __future__ import annotations

import os
import subprocess
import time

from .renderers import Target


def stop_local(target: Target) -> str:
    """Shut down supervisord (and with it every program); returns what happened, for the user."""
    conf = os.path.join(target.current, "supervisor", "supervisord.conf")
    if not os.path.exists(conf):
        return "nothing deployed"
    command = [target.python, "-m", "supervisor.supervisorctl", "-c", conf, "shutdown"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        return f"not running ({(result.stdout + result.stderr).strip()})"
    # supervisorctl returns once supervisord has been asked; wait for its programs to be gone.
    pid_file = os.path.join(target.root, "run", "supervisord.pid")
    deadline = time.monotonic() + 30
    while os.path.exists(pid_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    return "stopped" if not os.path.exists(pid_file) else "asked to stop; supervisord is still shutting down"
