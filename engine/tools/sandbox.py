"""Run one command of a machine tool in a bubblewrap sandbox, with limits, and report what happened.

    result = await run_sandboxed(["/usr/bin/python3", "-c", code],
                                 workspace=workspace_for(root, user_id), limits=SandboxLimits())

Layers, outermost first (one process chain, each `exec`s the next, so the pid we hold is bwrap's):

1. `setpriv` drops to an unprivileged uid when the engine runs as root. RLIMIT_NPROC does not bind
   uid 0, and bwrap run by root maps the sandbox's uid onto root outside, so without this step a
   fork bomb would not be stopped. The uid is the owner of the workspace folder: `workspace_for`
   gives each user a uid derived from a hash of their id (`sandbox_uid`), so one user's processes
   do not count against another's process limit, and each workspace is mode 0700 to its own uid.
   An engine that does not run as root keeps its own uid (it is unprivileged already), and every
   sandbox then shares that uid's process count.
2. `bwrap` (Debian's bubblewrap, not setuid) builds new user, mount, pid, network, IPC, UTS and
   cgroup namespaces (`--unshare-all --unshare-user`), forbids further user namespaces inside
   (`--disable-userns`), drops every capability, starts a new session (no TIOCSTI into the
   engine's terminal) and dies with its parent. The mount namespace holds only what is listed
   below: /usr read-only (with /usr/local hidden: system pip packages may hold the engine), the
   /bin, /lib, /lib64, /sbin symlinks, a short list of harmless /etc entries (no shadow, no
   passwd, no ssl/private), a fresh /proc for the new pid namespace, a minimal /dev, a small tmpfs
   /tmp, and the user's workspace read-write at /workspace; the root itself (bwrap's tmpfs holding
   the mount points) is remounted read-only. Nothing else of the host exists there: no data_dir,
   settings file, secrets, database or other workspace, because none is mounted. bwrap opens the
   workspace as the sandbox's uid, so the workspace root and its parents must be searchable (o+x)
   by it: keep workspaces apart from the engine's own 0700 data_dir.
   The network namespace has only its own loopback: the host's loopback services are unreachable.
3. `prlimit` inside the sandbox sets hard rlimits on the payload: CPU seconds (SIGXCPU one second
   before SIGKILL, so the cause can be told), address space, processes, file size, open files,
   no core files.

Around the process, in the event loop: a wall-clock timeout and an output cap (per stream) both
kill the sandbox by SIGKILL to bwrap; `--die-with-parent` then kills the sandbox's pid 1, and a pid
namespace whose pid 1 dies takes every process in it along, so the whole tree is gone.

Workspace quota, honestly: no kernel quota is used (the root filesystem here is not mounted with
quota options; a loop-mounted ext4 image per user would be a hard quota, and loop devices exist on
this machine, but it needs root and a mount per user at every start: not done). What this does:
before a run it measures the workspace (allocated blocks, symlinks not followed) and refuses the
run with `WorkspaceFull` when it is at or over the quota; during the run RLIMIT_FSIZE caps every
single file at what is left of the quota; after the run it measures again and reports
`workspace_bytes`. So one run can overshoot the quota (by writing many files, each under the
remaining size, until its CPU or wall-clock limit), and the next run is refused until files are
deleted. The host's disk is protected by the host's free space, not by this module.

What the sandbox does not guarantee: it shares the host's kernel, so a kernel bug reachable from an
unprivileged process in a user namespace is an escape; there is no seccomp filter (bwrap applies
one only when given); /proc shows host-wide facts (CPU, memory, uptime, the kernel version);
memory is capped as address space (RLIMIT_AS), not as resident memory, and a MemoryError cannot be
told apart from any other failure exit; CPU time is per process, so many processes (up to the
process limit) each get the full CPU budget until the wall clock stops them. The workspace holds
whatever the sandbox wrote, symlinks to anywhere included: code on the host that reads it (the
workspace file tools) must not follow links. A killed sandbox's pid 1 stays a zombie (no memory,
no files) until the host's init reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "Limit",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "WorkspaceFull",
    "run_sandboxed",
    "sandbox_uid",
    "workspace_for",
    "workspace_usage",
]

WORKSPACE = "/workspace"  # where the user's workspace appears inside the sandbox
UID_BASE = 1_500_000_000  # per-user sandbox uids live in [UID_BASE, UID_BASE + UID_SPAN)
UID_SPAN = 500_000_000
# /etc entries a program needs to start, resolve names and verify TLS; nothing that names a secret.
ETC_ENTRIES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "fonts", "hosts", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "nsswitch.conf", "python3",
    "python3.11", "ssl/certs",
)  # fmt: skip
BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": WORKSPACE, "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
READ_CHUNK = 65536
EXIT_GRACE_SECONDS = 5.0  # from the kill to every pipe closed

Limit = Literal["timeout", "output", "cpu", "file_size"]


class SandboxError(Exception):
    """The base of what `run_sandboxed` raises before running anything; the message is for the model."""


class SandboxUnavailable(SandboxError):
    """bwrap, setpriv or prlimit is not installed (Debian: bubblewrap, util-linux)."""


class WorkspaceFull(SandboxError):
    """The workspace is at or over its quota: files must be deleted before the next run."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. Sizes are bytes; `cpu_seconds` is CPU time per process."""

    wall_seconds: float = 30.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # address space (RLIMIT_AS) of each process
    processes: int = 64  # processes and threads of the sandbox's uid
    file_bytes: int = 64 << 20  # the largest single file a process may write
    open_files: int = 256
    output_bytes: int = 1 << 20  # per stream (stdout, stderr): more is cut and the run killed
    tmp_bytes: int = 64 << 20  # the tmpfs at /tmp
    workspace_quota_bytes: int = 256 << 20


@dataclass(frozen=True)
class SandboxResult:
    """How one run ended. `exit_code` is the payload's status (128+n when signal n killed it) or
    None when the sandbox was killed from outside (`limit` says why); `limit` names the limit that
    ended the run, if one did."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool = False
    truncated: bool = False
    limit: Limit | None = None
    workspace_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None

    def describe(self, limits: SandboxLimits) -> str:
        """One sentence for the model on how the run ended."""
        causes = {
            "timeout": f"killed: the wall-clock limit of {limits.wall_seconds:g} s was reached",
            "output": f"killed: output over {limits.output_bytes} bytes (shown cut at that size)",
            "cpu": f"killed: the CPU time limit of {limits.cpu_seconds} s was reached",
            "file_size": f"killed: a file grew past {limits.file_bytes} bytes or the workspace quota",
        }
        if self.limit is not None:
            return causes[self.limit]
        return f"exited with status {self.exit_code} after {self.duration:.1f} s"


def sandbox_uid(user_id: str) -> int:
    """The unprivileged uid a user's sandbox runs as: stable, derived from a hash of the id, in a
    range far above the uids of real accounts. Two users may collide (about n²/10⁹ for n users);
    they then share a process count and file ownership, still not each other's mounts."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return UID_BASE + int.from_bytes(digest[:8], "big") % UID_SPAN


def workspace_path(root: Path, user_id: str) -> Path:
    """Where the user's workspace is under `root` (made or not): a hash of the user id, never the
    id itself."""
    return root / hashlib.sha256(b"assistantctl-workspace\0" + user_id.encode()).hexdigest()[:32]


def workspace_for(root: Path, user_id: str) -> Path:
    """The user's persistent workspace folder under `root` (`workspace_path`), created if missing:
    mode 0700, owned by `sandbox_uid(user_id)` when the engine runs as root. Blocking (a mkdir and a
    chown): call it off the event loop or at start-up."""
    path = workspace_path(root, user_id)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        uid = sandbox_uid(user_id)
        os.chown(path, uid, uid)
    return path


def _usage(path: Path) -> int:
    total = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                total += info.st_blocks * 512  # allocated, so a sparse file counts what it holds
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return total


async def workspace_usage(workspace: Path) -> int:
    """Bytes the workspace takes on disk (symlinks not followed), measured in a worker thread."""
    return await asyncio.to_thread(_usage, workspace)


def _tools() -> tuple[str, str, str]:
    found = [shutil.which(name) for name in ("bwrap", "setpriv", "prlimit")]
    if None in found:
        raise SandboxUnavailable("the sandbox is not installed on this host (apt-get install bubblewrap util-linux)")
    return found[0], found[1], found[2]  # type: ignore[return-value]


def _mounts(workspace: Path, limits: SandboxLimits, ro_binds: Sequence[Path]) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr", "--tmpfs", "/usr/local"]
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{link}"):
            args += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            args += ["--ro-bind", f"/{link}", f"/{link}"]
    for entry in ETC_ENTRIES:
        if os.path.lexists(f"/etc/{entry}"):
            args += ["--ro-bind", f"/etc/{entry}", f"/etc/{entry}"]
    for path in ro_binds:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    args += ["--bind", str(workspace), WORKSPACE, "--chdir", WORKSPACE]
    # bwrap's root is a tmpfs it filled with mount points: read-only too, or /etc/x could be written
    args += ["--remount-ro", "/"]
    return args


def _command(
    argv: Sequence[str], workspace: Path, limits: SandboxLimits, file_bytes: int,
    ro_binds: Sequence[Path],
) -> list[str]:  # fmt: skip
    bwrap, setpriv, _ = _tools()
    drop: list[str] = []
    if os.geteuid() == 0:
        owner = workspace.stat().st_uid
        if owner == 0:
            raise SandboxError("the workspace belongs to root: make it with workspace_for()")
        drop = [setpriv, f"--reuid={owner}", f"--regid={owner}", "--clear-groups", "--"]
    sandbox = [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
        "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
        *_mounts(workspace, limits, ro_binds),
    ]  # fmt: skip
    rlimits = [
        "/usr/bin/prlimit",  # the host's prlimit, seen inside through the /usr bind
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.processes}",
        f"--fsize={file_bytes}",
        f"--nofile={limits.open_files}",
        "--core=0",
        "--",
    ]
    return [*drop, *sandbox, "--", *rlimits, *argv]


async def _read_capped(stream: asyncio.StreamReader, cap: int, over: asyncio.Event) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(READ_CHUNK):
        take = chunk[: cap - size]
        chunks.append(take)
        size += len(take)
        if len(take) < len(chunk):
            # the caller kills the sandbox; keep draining to EOF, because asyncio's Process.wait()
            # returns only once every pipe is closed, and a paused pipe never sees its EOF
            over.set()
    return b"".join(chunks)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            stdin.write(data)
            await stdin.drain()
        stdin.close()


def _kill(process: asyncio.subprocess.Process) -> None:
    # bwrap's own group (start_new_session); the sandbox itself dies with it (--die-with-parent
    # on its pid 1, and the pid namespace goes with its pid 1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _limit_from_status(code: int) -> Limit | None:
    # the soft CPU limit sends SIGXCPU a second before the hard one's SIGKILL: only SIGXCPU is
    # unambiguous (a bare SIGKILL may be the OOM killer or a kill inside the sandbox)
    if code == 128 + signal.SIGXCPU:
        return "cpu"
    if code == 128 + signal.SIGXFSZ:  # Python ignores SIGXFSZ (its write fails with EFBIG)
        return "file_size"
    return None


async def run_sandboxed(
    argv: Sequence[str],
    *,
    workspace: Path,
    limits: SandboxLimits,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    ro_binds: Sequence[Path] = (),
) -> SandboxResult:
    """Run `argv` (a path inside the sandbox, e.g. /usr/bin/python3) in a fresh sandbox whose only
    writable, persistent place is `workspace` (at /workspace, also the working directory).

    `env` is added to a minimal environment (PATH, HOME=/workspace, TMPDIR, LANG); nothing of the
    engine's environment goes in. `ro_binds` are extra host paths shown read-only at the same
    place (a browser's profile template, say); never pass anything of the engine's.
    Raises `SandboxUnavailable` when bubblewrap is missing and `WorkspaceFull` when the workspace is
    at its quota; every other ending, limits included, is a `SandboxResult`. Cancelling the call
    kills the sandbox.
    """
    used = await workspace_usage(workspace)
    if used >= limits.workspace_quota_bytes:
        raise WorkspaceFull(
            f"the workspace holds {used} bytes, at or over its quota of "
            f"{limits.workspace_quota_bytes} bytes: delete files before running anything"
        )
    file_bytes = max(1, min(limits.file_bytes, limits.workspace_quota_bytes - used))
    command = _command(argv, workspace, limits, file_bytes, ro_binds)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**BASE_ENV, **(env or {})},
        start_new_session=True,
    )
    try:
        return await _supervise(process, workspace, limits, stdin, started)
    except BaseException:
        _kill(process)  # cancelled by the caller (a tool's own timeout, a reload): leave nothing
        raise


async def _supervise(
    process: asyncio.subprocess.Process, workspace: Path, limits: SandboxLimits, stdin: bytes,
    started: float,
) -> SandboxResult:  # fmt: skip
    assert process.stdin and process.stdout and process.stderr
    over = asyncio.Event()
    feeding = asyncio.create_task(_feed(process.stdin, stdin))
    readers = [
        asyncio.create_task(_read_capped(stream, limits.output_bytes, over))
        for stream in (process.stdout, process.stderr)
    ]
    ended = asyncio.create_task(process.wait())
    overflow = asyncio.create_task(over.wait())
    done, _ = await asyncio.wait({ended, overflow}, timeout=limits.wall_seconds, return_when=asyncio.FIRST_COMPLETED)
    limit: Limit | None = None
    if ended not in done:
        limit = "output" if overflow in done else "timeout"
        _kill(process)
    overflow.cancel()
    # the sandbox is dead, so its pipes reach EOF; should anything still hold them, fail loudly
    # instead of hanging the caller (Process.wait() also waits for the pipes)
    finished, _ = await asyncio.wait([ended, *readers], timeout=EXIT_GRACE_SECONDS)
    feeding.cancel()
    if len(finished) < 1 + len(readers):
        _kill(process)
        for task in (ended, *readers):
            task.cancel()
        process._transport.close()  # type: ignore[attr-defined]  # no public way to drop the pipes
        raise SandboxError(f"the sandbox's processes outlived it (pid {process.pid}): not contained")
    stdout, stderr = (reader.result() for reader in readers)
    truncated = over.is_set()
    if limit is None and truncated:
        limit = "output"  # it overflowed just as it ended
    code = process.returncode
    if limit is None:
        limit = _limit_from_status(code)
    return SandboxResult(
        exit_code=None if limit in ("timeout", "output") else code,
        stdout=stdout,
        stderr=stderr,
        duration=time.monotonic() - started,
        timed_out=limit == "timeout",
        truncated=truncated,
        limit=limit,
        workspace_bytes=await workspace_usage(workspace),
    )
