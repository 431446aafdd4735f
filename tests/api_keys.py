"""Make API keys for a test engine the way `assistantctl keys create` does: the engine's own keys_cli."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx


def create_key(settings_path: Path | str, user: str, scopes: tuple[str, ...] = ("chat", "history"), **options) -> str:
    """A new key for `user` (`expires_at=` a UNIX time); engines pick it up within half a second."""
    command = [
        sys.executable,
        "-m",
        "assistantctl.engine.keys_cli",
        "--settings",
        str(settings_path),
        "create",
    ]
    command += ["--user", user, "--scopes", ",".join(scopes)]
    if "expires_at" in options:
        command += ["--expires-at", str(options["expires_at"])]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["key"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for_key(url: str, headers: dict[str, str], known: bool = True, timeout: float = 15) -> None:
    """Until every worker behind `url` takes the key in `headers` (or, `known=False`, refuses it):
    each worker re-reads the keys every half second, so this waits for 20 fresh connections in a
    row to agree (fresh ones spread over the workers). A key without the history scope gets a 403
    there: taken, not refused."""
    deadline, agreeing = time.monotonic() + timeout, 0
    while agreeing < 20:
        assert time.monotonic() < deadline, f"the key is not {'taken' if known else 'refused'} by every worker"
        status = httpx.get(f"{url}/api/v1/history", headers=headers, timeout=10).status_code
        agreeing = agreeing + 1 if (status != 401) == known else 0
        if not agreeing:
            time.sleep(0.05)
