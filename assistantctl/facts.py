"""What is live on a host: its manifest, the real hashes of its files, and what really runs.

Standard library only, and no imports from the project: for remote hosts this file's source is
sent to the host's Python as it is, so facts cost one round trip, not one module run per file.

The running state is read against the live release itself (its supervisor programs, the sockets
its files name, the sha256 its manifest gives the engine's settings), never against the spec:
plan.py tells from it whether the host still runs what its release says.
"""

from __future__ import annotations

import configparser
import hashlib
import http.client
import ipaddress
import json
import os
import platform
import re
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import xmlrpc.client


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


_VERSION = re.compile(r"(?:version |Candidate: )(\d+\.\d+\.\d+)")


def alertmanager_version() -> str | None:
    """The Alertmanager the host runs (`x.y.z`), else the one apt would install, else None.

    Its config keys differ by version (`bot_token_file` came in 0.26), so the renderer needs it.
    """
    for command in (["prometheus-alertmanager", "--version"], ["apt-cache", "policy", "prometheus-alertmanager"]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        found = _VERSION.search(result.stdout + result.stderr)
        if found:
            return found.group(1)
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
        "full_version": platform.python_version(),  # dependency markers may name a patch release
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


_PROGRAMS = "supervisor/programs/"
_LISTEN = re.compile(r"^\s*listen\s+([^\s;]+)([^;]*);", re.MULTILINE)
_FLAG_LISTEN = re.compile(r"--web\.listen-address=(\S*):(\d+)")
_LISTENER = re.compile(r"^ *\d+: ([0-9A-F]+):([0-9A-F]{4}) [0-9A-F]+:[0-9A-F]{4} 0A ", re.MULTILINE)  # 0A: LISTEN


def running(root: str, manifest: dict | None, every_path: bool = False) -> dict:
    """The live release's programs and sockets next to what supervisord runs and the kernel listens
    on, and the health of the engine (and, with `every_path`, of nginx → engine). `programs` is None
    when supervisord does not answer; a health entry's `settings_sha256` is what the engine loaded."""
    current = os.path.join(root, "current")
    files = (manifest or {}).get("files", {})
    expected = sorted(
        p[len(_PROGRAMS) : -len(".conf")] for p in files if p.startswith(_PROGRAMS) and p.endswith(".conf")
    )
    listening = _listening()
    sockets = [
        {"program": program, "address": address, "port": port, "tls": tls, "listening": sorted(listening.get(port, ()))}
        for program in expected
        for address, port, tls in _release_sockets(current, program, files)
    ]
    health = {}
    engine = next((s for s in sockets if s["program"] == "engine"), None)
    if engine:
        health["engine"] = _health(_url(engine))
    edge = sorted((s for s in sockets if s["program"] == "nginx"), key=lambda s: s["tls"])
    if every_path and edge:
        health["nginx → engine"] = _health(_url(edge[0]))
    return {"expected_programs": expected, "programs": _states(root), "sockets": sockets, "health": health}


def _release_sockets(current: str, program: str, files: dict) -> list[tuple[str, int, bool]]:
    """(address, port, tls) the live release tells `program` to listen on."""
    if program == "engine":
        settings = _read_json(os.path.join(current, "engine", "settings.json")) or {}
        if "listen_port" not in settings:
            return []
        return [(settings.get("listen_host") or "0.0.0.0", int(settings["listen_port"]), False)]
    if program == "nginx":
        found = []
        for path in sorted(p for p in files if p.startswith("nginx/") and p.endswith(".conf")):
            for target, options in _LISTEN.findall(_read_text(os.path.join(current, path))):
                address = _nginx_address(target)
                if address:
                    found.append((*address, "ssl" in options.split()))
        return sorted(set(found))
    command = _read_text(os.path.join(current, _PROGRAMS + program + ".conf"))  # prometheus, alertmanager
    return [(host or "0.0.0.0", int(port), False) for host, port in _FLAG_LISTEN.findall(command)]


def _nginx_address(target: str) -> tuple[str, int] | None:
    """nginx's `listen` forms: 8080, 127.0.0.1:8080, [::]:80, *:80, a host alone (port 80); no unix:."""
    if target.startswith("unix:"):
        return None
    if target.isdigit():
        return "0.0.0.0", int(target)
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest.removeprefix(":") or "80"
    elif ":" in target:
        host, _, port = target.rpartition(":")
    else:
        host, port = target, "80"
    return (("0.0.0.0" if host == "*" else host), int(port)) if port.isdigit() else None


def _listening() -> dict[int, set[str]]:
    """Port -> the addresses TCP sockets listen on there, from /proc/net/tcp{,6} of this namespace
    (one regex pass: a busy host lists thousands of connections, only the listeners matter)."""
    found: dict[int, set[str]] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/net/{name}") as f:
                table = f.read()
        except OSError:
            continue
        for address, port in _LISTENER.findall(table):
            # the kernel prints each 32-bit word of the address in host (little-endian) order
            raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
            ip = ipaddress.ip_address(socket.inet_ntop(family, raw))
            ip = getattr(ip, "ipv4_mapped", None) or ip
            found.setdefault(int(port, 16), set()).add(str(ip))
    return found


def _url(sock: dict) -> str:
    address = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(sock["address"], sock["address"])
    host = f"[{address}]" if ":" in address else address
    return f"{'https' if sock['tls'] else 'http'}://{host}:{sock['port']}/health"


def _health(url: str) -> dict:
    """GET /health: "ok", "http 503" or "down (why)", and what the engine says of itself (loopback only)."""
    context = None
    if url.startswith("https:"):  # our own listener: reachability, not identity (and no CA store to load)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            body = _json_object(response.read())
            result = {"url": url, "status": "ok" if response.status == 200 else f"http {response.status}"}
    except urllib.error.HTTPError as exc:
        return {"url": url, "status": f"http {exc.code}"}
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return {"url": url, "status": f"down ({getattr(exc, 'reason', exc)})"}
    workers = body.get("workers") if isinstance(body.get("workers"), dict) else {}
    if workers.get("settings_sha256"):  # what every worker runs, as the engine's parent says
        result["workers_settings_sha256"] = workers["settings_sha256"]
    return {**result, **{key: body[key] for key in ("settings_sha256", "pid") if key in body}}


def _json_object(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _states(root: str) -> dict[str, str] | None:
    """Program states from supervisord's own XML-RPC socket: no supervisorctl process, and no need for
    supervisor on the python that runs this. None when supervisord does not answer."""
    parser = configparser.RawConfigParser()
    parser.read(os.path.join(root, "current", "supervisor", "supervisord.conf"))
    path = parser.get("unix_http_server", "file", fallback=os.path.join(root, "run", "supervisor.sock"))
    connection = _UnixHTTPConnection(path, timeout=10)
    try:
        connection.request("POST", "/RPC2", xmlrpc.client.dumps((), "supervisor.getAllProcessInfo"))
        (processes,), _ = xmlrpc.client.loads(connection.getresponse().read())
    except (OSError, ValueError, xmlrpc.client.Error, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return {p["name"]: p["statename"] for p in processes}


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


# Run with the interpreter that runs the engine: the versions it has of the names in argv, and its
# PEP 508 marker environment (the names packaging's default_environment gives).
_DISTRIBUTIONS = """
import json, os, platform, sys
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
environment = {
    "implementation_name": sys.implementation.name,
    "implementation_version": platform.python_version(),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
print(json.dumps({"versions": {name: version(name) for name in sys.argv[1:]}, "environment": environment}))
"""


def distributions(python: str, names: list[str]) -> dict:
    """What `python` has of the distributions `names` ({"versions": {name: version or None},
    "environment": markers}), or {"error": why} when it does not answer."""
    try:
        result = subprocess.run(
            [python, "-c", _DISTRIBUTIONS, *names], capture_output=True, text=True, timeout=60, check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr.strip()[-300:]}
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}


def dispatch(request: dict) -> dict:
    if "distributions" in request:  # a question of its own (skill requirements), not the host's facts
        return distributions(request["distributions"]["python"], request["distributions"]["names"])
    facts = collect(request["root"], tuple(request.get("with_content", ())))
    # `status` (its values are for older callers) adds the health of every path, not only the engine's
    facts["running"] = running(request["root"], facts["manifest"], every_path="status" in request)
    if request.get("alertmanager"):  # asked of monitoring hosts only: it may cost an apt-cache run
        facts["alertmanager_version"] = alertmanager_version()
    return facts


if __name__ == "__main__":
    json.dump(dispatch(json.loads(sys.stdin.readline())), sys.stdout)
