"""What is live on a host: its manifest, the real hashes of its files, whether services run.

Standard library only, and no imports from the project: for remote hosts this file's source is
sent to the host's Python as it is, so facts cost one round trip, not one module run per file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import urllib.request


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
    facts["lock"] = _read_json(os.path.join(root, "run", "apply.lock"))
    facts["releases"] = _releases(os.path.join(root, "releases"))
    # apply.yml's rescue marks a release that went live and failed, and records every failed attempt
    facts["failed"] = {
        name: _read_json(os.path.join(root, "releases", name, "FAILED")) or {}
        for name in facts["releases"]
        if os.path.exists(os.path.join(root, "releases", name, "FAILED"))
    }
    facts["last_failure"] = _read_json(os.path.join(root, "run", "last-failure.json"))
    facts["runtimes"] = _runtimes(os.path.join(root, "venvs"))
    libc, libc_version = platform.libc_ver()
    facts["python"] = {
        "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "machine": platform.machine(),
        "glibc": libc_version if libc == "glibc" else "",
    }
    return facts


def _runtimes(folder: str) -> list[str]:
    """Engine virtualenvs whose install finished (the marker is written last)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n for n in names if os.path.exists(os.path.join(folder, n, ".complete")))


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _releases(folder: str) -> list[str]:
    """Finished releases, oldest first (names end in the UTC time of their apply)."""
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".")]
    except OSError:
        return []
    return sorted(names, key=lambda name: (name.rpartition("-")[2], name))


def services(root: str, python: str, engine_port: int) -> dict:
    """Program states as supervisord reports them, and whether the engine answers /health."""
    conf = os.path.join(root, "current", "supervisor", "supervisord.conf")
    states: dict[str, str] = {}
    try:
        result = subprocess.run(
            [python, "-m", "supervisor.supervisorctl", "-c", conf, "status"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1]
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{engine_port}/health", timeout=3) as response:
            health = "ok" if response.status == 200 else f"http {response.status}"
    except (OSError, ValueError) as exc:
        health = f"down ({getattr(exc, 'reason', exc)})"
    return {"programs": states, "health": health}


def dispatch(request: dict) -> dict:
    facts = collect(request["root"], tuple(request.get("with_content", ())))
    if "status" in request:
        facts["services"] = services(request["root"], **request["status"])
    return facts


if __name__ == "__main__":
    json.dump(dispatch(json.loads(sys.stdin.readline())), sys.stdout)
