"""Make API keys for a test engine the way `assistantctl keys create` does: the engine's own keys_cli."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
