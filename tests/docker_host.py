"""A docker daemon of the test's own, and a Debian bookworm image for it, with no registry at all.

The daemon runs with no default bridge and no iptables rules (nothing on the machine is touched);
compose's user-defined networks still work, and builds use the host's network. Its socket and
exec root live in a short folder of this session under /tmp (unix socket paths are limited to 108
bytes); its data root (image layers) and the debootstrap root file system are kept between runs
under CACHE, which one session at a time holds through a file lock: a second session waits.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("ASSISTANTCTL_TEST_CACHE", "/var/cache/assistantctl-tests"))
SUITE = "bookworm"
LOCK_WAIT_SECONDS = 1800  # another session's whole compose test
START_SECONDS = 60


@dataclass(frozen=True)
class DockerHost:
    socket: Path
    debian: str  # the imported bookworm image, for `assistantctl compose --debian`

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def client(self):
        import docker

        return docker.DockerClient(base_url=f"unix://{self.socket}", timeout=300)


def _need(program: str) -> str:
    found = shutil.which(program)
    if not found:
        pytest.fail(f"{program} is not installed: scripts/system-packages test (apt-get install docker.io debootstrap)")
    return found


def apt_mirror() -> str:
    """The Debian mirror apt itself uses here (deb822 sources or sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        words = line.split()
        if words[:1] == ["deb"] and "security" not in line:
            return next(w for w in words[1:] if w.startswith("http"))
    pytest.fail("no Debian mirror in apt's sources")


def debian_rootfs(cache: Path = CACHE) -> Path:
    """A tar of a `debootstrap --variant=minbase bookworm` root file system, built once per mirror."""
    mirror = apt_mirror()
    key = hashlib.sha256(json.dumps([SUITE, "minbase", mirror]).encode()).hexdigest()[:12]
    archive = cache / f"debian-{SUITE}-minbase-{key}.tar"
    if archive.exists():
        return archive
    with tempfile.TemporaryDirectory(dir=cache, prefix="debootstrap-") as tmp:
        root = Path(tmp) / "root"
        command = [_need("debootstrap"), "--variant=minbase", SUITE, str(root), mirror]
        subprocess.run(command, check=True, capture_output=True, timeout=900)
        partial = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=300)
        partial.rename(archive)
    return archive


@contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "docker.lock", "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{cache}/docker.lock stayed taken for {LOCK_WAIT_SECONDS} s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def docker_host(cache: Path = CACHE) -> Iterator[DockerHost]:
    """A running dockerd with the bookworm image imported; every container is removed and the
    daemon stopped on the way out, whatever happened inside."""
    dockerd = _need("dockerd")
    with _cache_lock(cache):
        rootfs = debian_rootfs(cache)
        run = Path(tempfile.mkdtemp(prefix="actl-dk-", dir="/tmp"))
        socket = run / "docker.sock"
        log = open(run / "dockerd.log", "wb")  # noqa: SIM115 (closed in finally)
        command = [
            dockerd,
            f"--data-root={cache / 'docker-data'}",
            f"--exec-root={run / 'exec'}",
            f"--pidfile={run / 'docker.pid'}",
            f"--host=unix://{socket}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        host = DockerHost(socket=socket, debian=f"assistantctl-test/debian:{rootfs.stem.rsplit('-', 1)[1]}")
        try:
            client = _wait_for(host, process, run)
            _remove_containers(client)  # a crashed earlier session's leftovers
            client.volumes.prune()
            if not client.images.list(name=host.debian):
                repository, tag = host.debian.split(":")
                client.api.import_image_from_file(str(rootfs), repository=repository, tag=tag)
            yield host
        finally:
            try:
                client = host.client()
                _remove_containers(client)
                client.networks.prune()
                client.volumes.prune()
                client.images.prune(filters={"dangling": True})
            except Exception:  # the daemon may be the thing that failed
                pass
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            log.close()
            _unmount_under(run)
            shutil.rmtree(run, ignore_errors=True)


def _unmount_under(folder: Path) -> None:
    """dockerd leaves its default network namespace bind-mounted under the exec root."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{folder}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _wait_for(host: DockerHost, process: subprocess.Popen, run: Path):
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dockerd exited {process.returncode}:\n{(run / 'dockerd.log').read_text()[-3000:]}")
        if host.socket.exists():
            try:
                client = host.client()
                client.ping()
                return client
            except Exception:
                pass
        time.sleep(0.2)
    pytest.fail(f"dockerd did not answer within {START_SECONDS} s:\n{(run / 'dockerd.log').read_text()[-3000:]}")


def _remove_containers(client) -> None:
    for container in client.containers.list(all=True):
        container.remove(force=True, v=True)
