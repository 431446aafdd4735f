"""renderers/supervisor.py against the real supervisord: its own parser, a live daemon running the
rendered programs (the real engine and nginx, prometheus and alertmanager), reload and respawn."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from supervisor.options import ServerOptions

from assistantctl.renderers import render_target
from assistantctl.renderers.escape import UnsafeValue
from assistantctl.renderers.supervisor import RENDERER, render
from assistantctl.schema.loader import SpecError


def need(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail(f"{program} is not installed (apt-get install {program}); these tests need the real binary")
    return found


def parse(conf: Path) -> dict[str, object]:
    """supervisord's own reading of a config and its includes: program name → ProcessConfig."""
    options = ServerOptions()
    options.realize(["-c", str(conf)])
    return {p.name: p for group in options.process_group_configs for p in group.process_configs}


def stage(target, files: dict[str, str], write_files, make_root) -> Path:
    """Write `{renderer/path: text}` as release x and point `current` at it; returns the conf path."""
    root = make_root(Path(target.root))
    write_files(root / "releases" / "x", files)
    (root / "current").symlink_to(root / "releases" / "x")
    return root / "current" / "supervisor" / "supervisord.conf"


def test_programs_follow_roles_and_toggles(make_target):
    assert set(render(make_target())) == {"supervisord.conf", "programs/engine.conf", "programs/nginx.conf"}
    monitoring_only = make_target(
        {
            "monitoring": {"prometheus": {"enabled": True}, "alertmanager": {"enabled": False}},
            "deploy": {"hosts": [{"name": "local", "roles": ["monitoring"]}]},
        }
    )
    # Prometheus scrapes every host's node_exporter, its own included.
    expected = {"supervisord.conf", "programs/prometheus.conf", "programs/node_exporter.conf"}
    assert set(render(monitoring_only)) == expected


def test_hosts_of_the_ha_pair_run_keepalived_in_the_foreground_with_their_own_pid_files(make_target, tmp_path):
    ha = {
        "security": {"edge_secret": "${env:EDGE_SECRET}"},
        "deploy": {
            "hosts": [
                {"name": "a", "address": "10.0.0.1", "roles": ["edge"]},
                {"name": "b", "address": "10.0.0.2", "roles": ["edge"]},
                {"name": "c", "address": "10.0.0.3", "roles": ["engine"]},
            ],
            "ha": {"virtual_ip": "10.0.0.100", "interface": "eth0", "hosts": ["a", "b"]},
        },
    }
    conf = render(make_target(ha, host="a", root=tmp_path / "r"))["programs/keepalived.conf"]
    command = shlex.split(next(line for line in conf.splitlines() if line.startswith("command=")).split("=", 1)[1])
    assert command[:5] == ["keepalived", "-n", "-l", "-D", "-P"]
    assert command[command.index("-f") + 1] == f"{tmp_path}/r/current/keepalived/keepalived.conf"
    assert command[command.index("-p") + 1] == f"{tmp_path}/r/run/keepalived.pid"
    assert command[command.index("-r") + 1] == f"{tmp_path}/r/run/keepalived-vrrp.pid"
    assert "programs/keepalived.conf" not in render(make_target(ha, host="c"))


def test_rendered_config_parses_with_every_value_in_place(make_target, write_files, make_root):
    target = make_target(
        {
            "limits": {"timeouts": {"request_seconds": 100.5}},
            "monitoring": {
                "prometheus": {"enabled": True, "port": 19090, "retention_days": 7},
                "alertmanager": {"enabled": True, "port": 19093},
            },
            "deploy": {"hosts": [{"name": "local", "roles": ["engine", "edge", "monitoring"]}]},
        }
    )
    root, current = target.root, target.current
    programs = parse(stage(target, render_target(target, only={"supervisor"}), write_files, make_root))
    engine, nginx = programs["engine"], programs["nginx"]
    assert shlex.split(engine.command) == [
        sys.executable,
        "-m",
        "assistantctl.engine",
        "--settings",
        f"{current}/engine/settings.json",
    ]
    assert engine.stopwaitsecs == 111 and engine.stopasgroup and engine.killasgroup and engine.autorestart
    assert engine.stdout_logfile == f"{root}/logs/engine.out.log" and engine.redirect_stderr
    assert shlex.split(nginx.command) == [
        "nginx",
        "-p",
        f"{current}/nginx/",
        "-c",
        "nginx.conf",
        "-e",
        f"{root}/logs/nginx-error.log",
    ]
    assert shlex.split(programs["prometheus"].command) == [
        "prometheus",
        f"--config.file={current}/prometheus/prometheus.yml",
        f"--storage.tsdb.path={root}/data/prometheus",
        "--web.listen-address=127.0.0.1:19090",
        "--storage.tsdb.retention.time=7d",
    ]
    assert shlex.split(programs["alertmanager"].command) == [
        "prometheus-alertmanager",
        f"--config.file={current}/alertmanager/alertmanager.yml",
        f"--storage.path={root}/data/alertmanager",
        "--web.listen-address=127.0.0.1:19093",
        "--cluster.listen-address=",
    ]


HOSTILE = ["a;b", "a\nb", "a#b", "a%b", "a%(here)s", "a'b", 'a"b', "a b", "a]\n[program:evil]\ncommand=x"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_root_and_python_stay_single_words(value, make_target, write_files, make_root, tmp_path):
    for overrides in (
        {"deploy": {"root": "/srv/" + value}},
        {"deploy": {"hosts": [{"name": "local", "python": "/opt/" + value}]}},
        {"deploy": {"hosts": [{"name": value}]}},
    ):
        with pytest.raises(SpecError):
            make_target(overrides)
    # Roots and interpreters also come from the controller (a local spec's folder, sys.executable).
    target = replace(make_target(root=tmp_path / f"r {value}"), python=f"/opt/py {value}/bin/python")
    try:
        files = render(target)
    except UnsafeValue:
        assert any(c in value for c in "\n;#%"), value
        return
    conf = write_files(make_root(Path(target.root)) / "releases" / "x" / "supervisor", files)
    programs = parse(conf / "supervisord.conf")
    assert set(programs) == {"engine", "nginx"}
    assert shlex.split(programs["engine"].command)[0] == target.python
    assert programs["engine"].stdout_logfile == f"{target.root}/logs/engine.out.log"


def test_render_is_deterministic(make_target):
    assert render_target(make_target(), only={"supervisor"}) == render_target(make_target(), only={"supervisor"})


def test_check_command_accepts_the_staged_folder_and_refuses_a_broken_one(make_target, write_files, make_root):
    target = make_target()
    folder = write_files(make_root(Path(target.root)) / "releases" / "x" / "supervisor", render(target))
    command = RENDERER.check.replace("{dir}", str(folder)).replace("{python}", target.python)
    assert subprocess.run(shlex.split(command), check=False, capture_output=True).returncode == 0
    (folder / "programs" / "engine.conf").write_text("[program:engine]\nautorestart=sometimes\n")
    assert subprocess.run(shlex.split(command), check=False, capture_output=True).returncode != 0


# --- a live supervisord ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def eventually(check, timeout: float = 30, message: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out: {message}")
        time.sleep(0.2)


@pytest.fixture
def short_root():
    """A short root: the socket path must fit a sockaddr_un (about 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="sup-test-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


MONITORING_CONFIGS = {
    "prometheus/prometheus.yml": "global:\n  scrape_interval: 15s\nscrape_configs: []\n",
    "alertmanager/alertmanager.yml": "route:\n  receiver: none\nreceivers:\n  - name: none\n",
}


def test_supervisord_runs_the_rendered_programs(make_target, write_files, make_root, short_root):
    for program in ("nginx", "prometheus", "prometheus-alertmanager"):
        need(program)
    http, engine, prom, am = (free_port() for _ in range(4))
    target = make_target(
        {
            "monitoring": {
                "prometheus": {"enabled": True, "port": prom},
                "alertmanager": {"enabled": True, "port": am},
            },
            "deploy": {
                "ports": {"http": http, "engine": engine},
                "hosts": [{"name": "local", "roles": ["engine", "edge", "monitoring"]}],
            },
        },
        root=short_root,
    )
    # The real engine and nginx configs; the two monitoring configs are minimal stand-ins, since
    # only the program definitions are under test here.
    files = {**render_target(target, only={"engine", "nginx", "supervisor"}), **MONITORING_CONFIGS}
    conf = stage(target, files, write_files, make_root)
    ctl = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf)]
    pidfile = short_root / "run" / "supervisord.pid"
    started = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    groups: dict[str, int] = {}
    try:
        assert started.returncode == 0, started.stderr
        states = eventually(lambda: _states_if_all_running(ctl), 60, "every program RUNNING")
        groups.update({name: _pid(ctl, name) for name in states})  # for cleanup, whatever happens next
        assert set(states) == {"engine", "nginx", "prometheus", "alertmanager", "node_exporter"}
        sock = short_root / "run" / "supervisor.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        # The real engine answers through the real nginx; the monitoring daemons on loopback.
        eventually(lambda: httpx.get(f"http://127.0.0.1:{http}/health").status_code == 200, 60, "health")
        eventually(lambda: httpx.get(f"http://127.0.0.1:{prom}/-/ready").status_code == 200, 60, "prometheus")
        eventually(lambda: httpx.get(f"http://127.0.0.1:{am}/-/ready").status_code == 200, 60, "alertmanager")
        # How apply reloads nginx: HUP keeps the master (same pid) and it keeps serving.
        nginx_pid = _pid(ctl, "nginx")
        assert subprocess.run([*ctl, "signal", "HUP", "nginx"], check=False, capture_output=True).returncode == 0
        eventually(lambda: httpx.get(f"http://127.0.0.1:{http}/health").status_code == 200, 10, "after HUP")
        assert _pid(ctl, "nginx") == nginx_pid
        # A crashed program comes back. Each program is its own process group: kill the whole
        # group, as killing only the master would leave its workers holding the port.
        os.killpg(nginx_pid, signal.SIGKILL)
        eventually(lambda: _pid(ctl, "nginx") not in (0, nginx_pid), 15, "nginx respawned")
        eventually(lambda: httpx.get(f"http://127.0.0.1:{http}/health").status_code == 200, 10, "after respawn")
        groups["nginx (respawned)"] = _pid(ctl, "nginx")
    finally:
        subprocess.run([*ctl, "shutdown"], check=False, capture_output=True, timeout=120)
        daemon = int(pidfile.read_text()) if pidfile.exists() else 0
        deadline = time.monotonic() + 60
        while daemon and pid_alive(daemon) and time.monotonic() < deadline:
            time.sleep(0.1)
        if daemon and pid_alive(daemon):
            os.kill(daemon, signal.SIGKILL)
        for group in groups.values():  # whatever shutdown did not stop
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    assert not (daemon and pid_alive(daemon))


def _status(ctl: list[str]) -> dict[str, str]:
    out = subprocess.run([*ctl, "status"], check=False, capture_output=True, text=True, timeout=30).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def _states_if_all_running(ctl: list[str]) -> dict[str, str] | None:
    states = _status(ctl)
    return states if states and all(s == "RUNNING" for s in states.values()) else None


def _pid(ctl: list[str], name: str) -> int:
    out = subprocess.run([*ctl, "pid", name], check=False, capture_output=True, text=True, timeout=30).stdout.strip()
    return int(out) if out.isdigit() else 0
