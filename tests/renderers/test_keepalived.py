"""renderers/keepalived.py against the real keepalived 2.2 (`keepalived -t`) inside a network
namespace that has the configured interface: both hosts of the pair pass, the included auth file
is read from the staged folder, hostile values never add a directive, the health check is the
local engine's /health, and the notify script logs each transition."""

from __future__ import annotations

import http.server
import itertools
import os
import re
import shlex
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from assistantctl.renderers.escape import UnsafeValue
from assistantctl.renderers.keepalived import AUTH_FILE, AUTH_SECRET, NOTIFY_LOG, RENDERER, render, secret_files

INTERFACE = "vipnet0"
PASSWORD = "s3cr3t"  # a keepalived word within VRRP's 8 bytes
INJECTED = "bogus_directive"
_names = itertools.count()


def keepalived_bin() -> str:
    found = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
    if not found:
        pytest.fail("keepalived is not installed: apt-get install keepalived (these tests need the real binary)")
    return found


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def netns():
    """A namespace of its own (pid in the name) holding INTERFACE, one end of a veth pair."""
    if shutil.which("ip") is None:
        pytest.fail("ip is not installed: apt-get install iproute2")
    name = f"ka-{os.getpid()}-{next(_names)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", INTERFACE, "type", "veth", "peer", "name", "vippeer0")
        ip("-n", name, "link", "set", INTERFACE, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)


def ha_overrides(
    engine_port: int = 8081,
    interface: str = INTERFACE,
    roles: tuple[str, ...] = ("engine", "edge"),
    http_port: int = 8080,
) -> dict:
    return {
        "security": {"edge_secret": "${env:EDGE_SECRET}"},
        "deploy": {
            "ports": {"engine": engine_port, "http": http_port},
            "hosts": [
                {"name": "alpha", "address": "10.77.0.1", "connection": "ssh", "roles": list(roles)},
                {"name": "beta", "address": "10.77.0.2", "connection": "ssh", "roles": list(roles)},
            ],
            "state": {"history": "postgres", "postgres_dsn": "${env:PG_DSN}"},
            "ha": {
                "virtual_ip": "10.77.0.100",
                "interface": interface,
                "router_id": 77,
                "hosts": ["alpha", "beta"],
                "auth_password": "${env:VRRP_PASSWORD}",
            },
        },
    }


def stage(target, files: dict[str, str]) -> Path:
    """Write the files as apply does: <root>/releases/x/keepalived, `current` pointing at it."""
    root = Path(target.root)
    folder = root / "releases" / "x" / "keepalived"
    folder.mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "current").symlink_to(root / "releases" / "x")
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


def check(netns: str, folder: Path) -> subprocess.CompletedProcess:
    """The renderer's own check, inside the namespace, from an unrelated cwd."""
    argv = shlex.split(RENDERER.check.replace("{dir}", str(folder)))
    assert argv[0] == "keepalived"
    cmd = ["ip", "netns", "exec", netns, keepalived_bin(), *argv[1:], "-l"]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30, cwd="/")


def assert_passes(netns: str, folder: Path) -> None:
    result = check(netns, folder)
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Unknown keyword" not in result.stderr + result.stdout


def test_master_and_backup_configs_pass_keepalived_t(make_target, netns, tmp_path):
    seen = {}
    for host in ("alpha", "beta"):
        target = make_target(ha_overrides(), host=host, root=tmp_path / host)
        files = {**render(target), **secret_files(target, {AUTH_SECRET: PASSWORD})}
        folder = stage(target, files)
        assert_passes(netns, folder)
        conf = files["keepalived.conf"]
        seen[host] = {k: re.search(rf"^\s*{k} (\S+)$", conf, re.M).group(1) for k in ("state", "priority")}
        peer = "10.77.0.2" if host == "alpha" else "10.77.0.1"
        assert f"unicast_src_ip {'10.77.0.1' if host == 'alpha' else '10.77.0.2'}" in conf
        assert re.search(rf"unicast_peer {{\s+{peer}\s+}}", conf)
        assert f"10.77.0.100/32 dev {INTERFACE}" in conf and "virtual_router_id 77" in conf
        assert f"include {AUTH_FILE}" in conf and PASSWORD not in conf
        assert f"auth_pass {PASSWORD}" in files[AUTH_FILE]
    assert seen == {"alpha": {"state": "MASTER", "priority": "150"}, "beta": {"state": "BACKUP", "priority": "100"}}


def test_check_fails_on_a_directive_keepalived_does_not_know(make_target, netns, tmp_path):
    """The check is worth something: an unknown keyword, also inside the included auth file,
    or a missing interface fail it (keepalived -t reads the include next to the config)."""
    target = make_target(ha_overrides())
    folder = stage(target, {**render(target), AUTH_FILE: f"authentication {{\n    {INJECTED} 1\n}}\n"})
    assert check(netns, folder).returncode != 0
    other = make_target(ha_overrides(interface="nosuchif0"), root=tmp_path / "other")
    assert check(netns, stage(other, render(other))).returncode != 0


HOSTILE = ["x\nbogus_directive 1", "x bogus_directive", "x}\nbogus_directive 1\n{", "x#y", "x!y", 'x"y', "x'y", "x\\"]


def _with(target, field: str, value: str):
    """`target` with one value the schema would refuse, forced in behind its back."""
    spec, deploy = target.spec, target.spec.deploy
    if field == "root":
        return replace(target, root=f"{target.root}/{value}")
    if field == "name":
        return replace(target, spec=spec.model_copy(update={"name": value}))
    ha, hosts = deploy.ha, list(deploy.hosts)
    if field == "interface":
        ha = ha.model_copy(update={"interface": value})
    else:  # the host's own name, everywhere the spec names it
        hosts[0] = hosts[0].model_copy(update={"name": value})
        ha = ha.model_copy(update={"hosts": [value, ha.hosts[1]]})
    spec = spec.model_copy(update={"deploy": deploy.model_copy(update={"ha": ha, "hosts": hosts})})
    return replace(target, spec=spec, host=hosts[0])


@pytest.mark.parametrize("field", ["interface", "name", "host", "root"])
def test_hostile_values_never_add_a_directive(field, make_target, netns, tmp_path):
    """Values the schema would refuse, forced past it: the renderer refuses them itself."""
    target = make_target(ha_overrides())
    for value in HOSTILE:
        with pytest.raises(UnsafeValue):
            render(_with(target, field, value))
    # The same path with a plain word renders and passes the real check.
    plain = _with(target, field, INTERFACE if field == "interface" else "plain")
    assert_passes(netns, stage(plain, render(plain)))


@pytest.mark.parametrize("password", [*HOSTILE, "toolong99", ""])
def test_hostile_or_oversized_passwords_are_refused_without_echoing_them(password, make_target):
    with pytest.raises(UnsafeValue) as refused:
        secret_files(make_target(ha_overrides()), {AUTH_SECRET: password})
    assert AUTH_SECRET in str(refused.value) and (not password or password not in str(refused.value))


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("roles", [("engine", "edge"), ("engine",)])
def test_track_script_is_the_local_health_endpoint(roles, make_target):
    """On an edge host the VIP serves nginx: /health through it (and so the engine behind it);
    on an engine-only host the engine's own /health."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    ports = {"http_port": port} if "edge" in roles else {"engine_port": port}
    try:
        conf = render(make_target(ha_overrides(roles=roles, **ports)))["keepalived.conf"]
        script = re.search(r"vrrp_script chk_engine {\s+script \"([^\"]+)\"", conf).group(1).split()
        assert re.search(r"track_script {\s+chk_engine\s+}", conf)
        assert script[-1] == f"http://127.0.0.1:{port}/health"
        assert subprocess.run(script, check=False, capture_output=True, timeout=10).returncode == 0
        _Health.status = 503
        assert subprocess.run(script, check=False, capture_output=True, timeout=10).returncode != 0
    finally:
        _Health.status = 200
        server.shutdown()
        server.server_close()
    # Nothing listening any more: the service is down, so the check fails.
    assert subprocess.run(script, check=False, capture_output=True, timeout=10).returncode != 0


def test_notify_script_logs_every_transition(make_target):
    target = make_target(ha_overrides())
    folder = stage(target, render(target))
    notify = re.search(r'notify "([^"]+)"', render(target)["keepalived.conf"]).group(1).split()
    assert notify == ["/bin/sh", f"{target.root}/current/keepalived/notify.sh"]
    for state in ("MASTER", "FAULT", "BACKUP"):
        # keepalived's notify arguments: TYPE NAME STATE PRIORITY.
        result = subprocess.run([*notify, "INSTANCE", "assistant", state, "150"], check=False, capture_output=True)
        assert result.returncode == 0, result.stderr
    assert (folder / "notify.sh").is_file()
    lines = (Path(target.root) / "logs" / NOTIFY_LOG).read_text().splitlines()
    stamp = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
    expected = [("INFO", "MASTER"), ("WARNING", "FAULT"), ("INFO", "BACKUP")]
    assert len(lines) == 3
    for line, (level, state) in zip(lines, expected, strict=True):
        pattern = rf"{stamp} {level} keepalived.notify type=INSTANCE instance=assistant state={state} priority=150"
        assert re.fullmatch(pattern, line), line
