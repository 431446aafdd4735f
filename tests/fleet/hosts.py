"""Test hosts on this one machine: a network namespace per host, joined by a bridge, each running sshd.

Every host gets its own address (10.231.<k>.<i>/24 on `eth0`), its own sshd (own host key, config
and pid file, key-only root login) and its own files: sshd runs inside a private mount namespace
where a per-host folder is bind-mounted over the shared deploy root, so the same absolute root is
a different folder on each host, and everything sshd spawns (Ansible, supervisord, the engine,
nginx, keepalived) sees that folder. The rest of the filesystem is shared, interpreter included.

`Fleet.close()` kills every process left in the hosts' namespaces (by pid), deletes the
namespaces, the bridge and the mount point; it is safe to call after a half-finished start.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUBNET_PREFIX = "10.231"
SUBNET_LOCK = Path("/tmp/assistantctl-fleet-subnets.lock")
SSH_PORT = 22
SSHD = "/usr/sbin/sshd"
REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "ssh", "ssh-keygen", SSHD)

_fleets_started = 0


class FleetError(RuntimeError):
    pass


def run(*command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise FleetError(f"{' '.join(command)} failed (rc {result.returncode}): {result.stderr.strip()}")
    return result


def require_tools() -> None:
    """Fail loudly (never skip) when a tool the fleet needs is missing, or when not root."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise FleetError(f"fleet tests need {', '.join(missing)} (apt-get install openssh-server iproute2 util-linux)")
    if os.geteuid() != 0:
        raise FleetError("fleet tests create network namespaces: run them as root")


@dataclass
class TestHost:
    name: str
    netns: str
    address: str
    files: Path  # this host's folder, seen as the deploy root inside the host
    root: str  # the deploy root, the same absolute path on every host
    sshd: subprocess.Popen | None = None

    def path(self, relative: str) -> Path:
        """Where a file under the deploy root lives for this host, seen from the controller.

        `current` points at an absolute path under the shared root; it is followed by hand here.
        """
        head, _, rest = relative.partition("/")
        if head == "current":
            release = os.readlink(self.files / "current")
            head = os.path.relpath(release, self.root)
        return self.files / head / rest if rest else self.files / head

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command on the host: in its network and mount namespaces (those of its sshd)."""
        if self.sshd is None:
            raise FleetError(f"{self.name} is not started")
        return run("nsenter", "-t", str(self.sshd.pid), "-n", "-m", "--", *command, check=check, timeout=timeout)

    def supervisorctl(self, python: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        conf = f"{self.root}/current/supervisor/supervisord.conf"
        return self.run(python, "-m", "supervisor.supervisorctl", "-c", conf, *args, check=check)

    def pids(self) -> list[int]:
        listed = run("ip", "netns", "pids", self.netns, check=False).stdout.split()
        return [int(p) for p in listed if p.isdigit()]


class Fleet:
    """N hosts on a private bridge; `start()` brings them up, `close()` removes every trace."""

    def __init__(self, workdir: Path, names: list[str]):
        global _fleets_started
        _fleets_started += 1
        self.workdir = workdir
        self.tag = f"{os.getpid():x}{_fleets_started}"
        self.bridge = f"afb{self.tag}"
        self.root = f"/srv/assistant-fleet-{self.tag}"
        self.key = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.ssh_config = workdir / "ssh_config"
        self.subnet: int | None = None
        self.names = names
        self.hosts: list[TestHost] = []
        self._veths: list[str] = []
        self._mountpoint_made = False

    # --- addresses ----------------------------------------------------------------------------

    def address(self, last: int) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet}.{last}"

    @property
    def gateway(self) -> str:
        """The bridge's own address: how the controller (root namespace) reaches the hosts."""
        return self.address(254)

    def _pick_subnet(self) -> int:
        used = run("ip", "-4", "-o", "addr").stdout
        start = os.getpid() % 200 + 1
        for offset in range(250):
            k = (start + offset) % 250 + 1
            if f" {SUBNET_PREFIX}.{k}." not in used:
                return k
        raise FleetError(f"no free {SUBNET_PREFIX}.x.0/24 subnet")

    # --- start --------------------------------------------------------------------------------

    def start(self) -> Fleet:
        require_tools()
        self._make_keys()
        with open(SUBNET_LOCK, "w") as lock:
            # Concurrent test runs pick their subnets one at a time.
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = self._pick_subnet()
            run("ip", "link", "add", self.bridge, "type", "bridge")
            run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        os.makedirs(self.root, exist_ok=False)
        self._mountpoint_made = True
        os.makedirs("/run/sshd", exist_ok=True)
        for i, name in enumerate(self.names, start=1):
            netns = f"assistant-fleet-{self.tag}-{name}"
            host = TestHost(name, netns, self.address(i), self.workdir / "hosts" / name, self.root)
            self.hosts.append(host)  # registered before anything can fail, so close() removes it
            self._add_host(i, host)
        self._write_ssh_config()
        for host in self.hosts:
            self._start_sshd(host)
        for host in self.hosts:
            self._wait_for_sshd(host)
        return self

    def _make_keys(self) -> None:
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "assistantctl-fleet-test", "-f", str(self.key))

    def _add_host(self, i: int, host: TestHost) -> None:
        netns = host.netns
        outside, inside = f"va{self.tag}x{i}", f"vb{self.tag}x{i}"
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        self._veths.append(outside)
        run("ip", "link", "set", outside, "master", self.bridge, "up")
        run("ip", "link", "set", inside, "netns", netns)
        run("ip", "-n", netns, "link", "set", inside, "name", "eth0")
        run("ip", "-n", netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        host.files.mkdir(parents=True)

    def _sshd_config(self, host: TestHost) -> Path:
        folder = self.workdir / "sshd" / host.name
        folder.mkdir(parents=True)
        host_key = folder / "ssh_host_ed25519_key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        authorized = folder / "authorized_keys"
        authorized.write_text(self.key.with_suffix(".pub").read_text())
        key_type, public_key = host_key.with_suffix(".pub").read_text().split()[:2]
        with open(self.known_hosts, "a") as known:
            known.write(f"{host.address} {key_type} {public_key}\n")
        config = folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {host.address}:{SSH_PORT}",
                    f"HostKey {host_key}",
                    f"PidFile {folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # the test's key files live in a shared temp folder
                    "UseDNS no",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        return config

    def _write_ssh_config(self) -> None:
        """The controller's ssh client settings: the spec points `ssh_config` at this file."""
        self.ssh_config.write_text(
            f"Host {SUBNET_PREFIX}.{self.subnet}.*\n"
            "    User root\n"
            f"    IdentityFile {self.key}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    ConnectTimeout 5\n"
        )

    def _start_sshd(self, host: TestHost) -> None:
        config = self._sshd_config(host)
        # sshd is exec'd last, so the Popen pid is sshd's: the anchor of the host's mount namespace.
        script = 'mount --bind "$1" "$2" && exec "$3" -D -e -f "$4"'
        log = open(self.workdir / "sshd" / host.name / "sshd.log", "w")  # noqa: SIM115 (lives with sshd)
        host.sshd = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation", "private"]
            + ["sh", "-c", script, "_", str(host.files), self.root, SSHD, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def _wait_for_sshd(self, host: TestHost, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host.sshd.poll() is not None:
                log = (self.workdir / "sshd" / host.name / "sshd.log").read_text()
                raise FleetError(f"sshd of {host.name} exited (rc {host.sshd.returncode}): {log}")
            try:
                with socket.create_connection((host.address, SSH_PORT), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise FleetError(f"sshd of {host.name} did not listen on {host.address}:{SSH_PORT} within {timeout} s")

    # --- stop ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process in the hosts' namespaces, then delete namespaces, bridge, mount point."""
        errors = []
        for host in self.hosts:
            try:
                _kill_all(host)
            except Exception as exc:  # keep cleaning the other hosts
                errors.append(f"{host.name}: {exc}")
        existing = run("ip", "netns", "list", check=False).stdout.split()
        for host in self.hosts:
            if host.netns not in existing:
                continue
            result = run("ip", "netns", "del", host.netns, check=False)
            if result.returncode != 0:
                errors.append(f"ip netns del {host.netns}: {result.stderr.strip()}")
        for veth in self._veths:  # normally gone with its peer's namespace
            if run("ip", "link", "show", veth, check=False).returncode == 0:
                run("ip", "link", "del", veth, check=False)
        if run("ip", "link", "show", self.bridge, check=False).returncode == 0:
            result = run("ip", "link", "del", self.bridge, check=False)
            if result.returncode != 0:
                errors.append(f"ip link del {self.bridge}: {result.stderr.strip()}")
        if self._mountpoint_made:
            try:
                os.rmdir(self.root)  # the per-host bind mounts lived in the hosts' namespaces only
            except OSError as exc:
                errors.append(f"rmdir {self.root}: {exc}")
        if errors:
            raise FleetError("fleet cleanup left traces:\n" + "\n".join(errors))


def _kill_all(host: TestHost, grace: float = 3.0, limit: float = 10.0) -> None:
    """SIGTERM every process in the host's network namespace, then SIGKILL until none is left.

    Killing goes on in rounds: a supervisor that is being stopped may still start a process.
    """
    pids = set(host.pids())
    if host.sshd is not None and host.sshd.poll() is None:
        pids.add(host.sshd.pid)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    deadline = time.monotonic() + limit
    while True:
        left = [p for p in set(host.pids()) | pids if _alive(p)]
        if not left:
            break
        if time.monotonic() > deadline:
            raise FleetError(f"processes still in {host.netns}: {left}")
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.05)
    if host.sshd is not None:
        host.sshd.wait(timeout=5)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
