"""What is live on a host: its manifest, the real hashes of its files, whether services run.

Standard library only, and no imports from the project: for remote hosts this file's source is
sent to the host's Python as it is, so facts cost one round trip, not one module run per file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _pid_alive(pid_file: str) -> bool:
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def collect(root: str, with_content: tuple[str, ...] = ()) -> dict:
    """Facts about the release under `root`; `with_content` names live files to return verbatim."""
    current = os.path.join(root, "current")
    facts: dict = {"root": root, "release": None, "manifest": None, "actual": {}, "content": {}}
    if os.path.islink(current):
        facts["release"] = os.path.basename(os.readlink(current))
    try:
        with open(os.path.join(current, "MANIFEST.json")) as f:
            facts["manifest"] = json.load(f)
    except (OSError, ValueError):
        pass
    for path in (facts["manifest"] or {}).get("files", {}):
        facts["actual"][path] = _sha256(os.path.join(current, path))
    for path in with_content:
        try:
            with open(os.path.join(current, path), encoding="utf-8", errors="replace") as f:
                facts["content"][path] = f.read()
        except OSError:
            facts["content"][path] = None
    facts["supervisord_running"] = _pid_alive(os.path.join(root, "run", "supervisord.pid"))
    return facts


if __name__ == "__main__":
    request = json.loads(sys.stdin.readline())
    json.dump(collect(request["root"], tuple(request.get("with_content", ()))), sys.stdout)
