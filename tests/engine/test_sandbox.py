"""The machine tools' sandbox (engine/tools/sandbox.py) with the real bubblewrap: each escape attempt,
bomb and runaway is contained, says why it ended, and leaves nothing changed outside the workspace.
The payloads are Python programs run by the host's /usr/bin/python3, seen read-only inside."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistantctl.engine.tools.sandbox import (
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    WorkspaceFull,
    run_sandboxed,
    sandbox_uid,
    workspace_for,
)

# Users of this module only: another module running sandboxes at the same time (the suite runs in
# parallel) must not share their uids, which the process checks below count.
ALICE = f"alice-sandbox-test-{os.getpid()}"
BOB = f"bob-sandbox-test-{os.getpid()}"

TIGHT = SandboxLimits(
    wall_seconds=10, cpu_seconds=2, memory_bytes=256 << 20, processes=16, file_bytes=4 << 20,
    output_bytes=64 << 10, workspace_quota_bytes=16 << 20,
)  # fmt: skip
SETTINGS_TEXT = "api_key: SETTINGS-SECRET-4711\n"
BOB_SECRET = "BOB-PRIVATE-NOTE-0815"


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder standing for the engine's host: its settings file (readable by anyone, so only the
    sandbox's mounts hide it) and the workspace root. pytest's own tmp folders are 0700 to root,
    which the sandbox's uid could not traverse to reach its workspace, so this one lives apart."""
    assert shutil.which("bwrap"), "bubblewrap is missing: scripts/system-packages test installs it"
    folder = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    folder.chmod(0o711)
    (folder / "settings.yaml").write_text(SETTINGS_TEXT)
    (folder / "settings.yaml").chmod(0o644)
    (folder / "workspaces").mkdir(mode=0o711)
    monkeypatch.setenv("ASSISTANT_TEST_SECRET", "ENGINE-ENV-SECRET")
    yield folder
    shutil.rmtree(folder)


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` but `skip` with its size and mtime: what "nothing changed" means."""
    found = {}
    for path in folder.rglob("*"):
        if skip != path and skip not in path.parents:
            info = path.lstat()
            found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


def processes_of(uid: int) -> list[int]:
    """Live processes of `uid` (zombies are dead: the killed sandbox's pid 1 waits as one until the
    host's init reaps it)."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # gone while we looked
        if str(uid) in fields["Uid"].split() and not fields["State"].strip().startswith("Z"):
            pids.append(int(status.parent.name))
    return pids


def no_processes_left(uid: int) -> bool:
    # a pid namespace dies with its pid 1 asynchronously: give the kernel a moment
    deadline = time.monotonic() + 5
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not processes_of(uid)


async def run_python(code: str, workspace: Path, limits: SandboxLimits = TIGHT, **kwargs) -> SandboxResult:
    return await run_sandboxed(
        ["/usr/bin/python3", "-c", textwrap.dedent(code)], workspace=workspace, limits=limits, **kwargs
    )


async def test_a_run_writes_into_its_workspace_and_the_file_persists_to_the_next_run(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    first = await run_python(
        """
        import os, sys
        open("notes.txt", "w").write(sys.stdin.read())
        print(os.getcwd(), os.getuid(), os.environ["HOME"])
        """,
        workspace,
        stdin=b"remember the otters",
    )
    assert first.ok, first
    assert first.stdout.split() == [b"/workspace", str(sandbox_uid(ALICE)).encode(), b"/workspace"]
    assert (workspace / "notes.txt").read_text() == "remember the otters"
    assert (workspace / "notes.txt").stat().st_uid == sandbox_uid(ALICE)
    assert first.workspace_bytes > 0

    second = await run_python("print(open('/workspace/notes.txt').read())", workspace)
    assert second.ok and second.stdout == b"remember the otters\n"


def test_a_workspace_is_named_by_a_hash_and_private_to_its_user(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", "alice@example.org")
    assert (
        ALICE not in workspace.name
        and workspace.name in hashlib.sha256(b"assistantctl-workspace\0alice@example.org").hexdigest()
    )
    assert workspace_for(host / "workspaces", "alice@example.org") == workspace
    assert workspace_for(host / "workspaces", BOB) != workspace
    assert workspace.stat().st_mode & 0o777 == 0o700
    assert workspace.stat().st_uid == sandbox_uid("alice@example.org") != sandbox_uid(BOB) > 65535


async def test_shadow_the_engine_settings_environment_and_another_workspace_are_not_visible(host: Path) -> None:
    alice = workspace_for(host / "workspaces", ALICE)
    bob = workspace_for(host / "workspaces", BOB)
    (bob / "private.txt").write_text(BOB_SECRET)
    result = await run_python(
        f"""
        import os
        for path in ["/etc/shadow", "/etc/passwd", {str(host / "settings.yaml")!r},
                     {str(bob / "private.txt")!r}, "/workspace/../{bob.name}/private.txt"]:
            try:
                print(path, "READ", open(path).read())
            except OSError as error:
                print(path, type(error).__name__)
        print("root:", sorted(os.listdir("/")))
        print("env:", sorted(os.environ))
        """,
        alice,
    )
    assert result.ok, result
    out = result.stdout.decode()
    assert "READ" not in out and SETTINGS_TEXT.strip() not in out and BOB_SECRET not in out
    assert out.count("FileNotFoundError") == 5, out  # not even there: nothing of the host is mounted
    assert "root: ['bin', 'dev', 'etc', 'lib', 'lib64', 'proc', 'sbin', 'tmp', 'usr', 'workspace']" in out
    assert "ENGINE-ENV-SECRET" not in out and "ASSISTANT_TEST_SECRET" not in out


async def test_writes_outside_the_workspace_fail_and_change_nothing(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    before = snapshot(host, skip=workspace)
    result = await run_python(
        f"""
        for path in ["/usr/escaped", "/etc/escaped", "/escaped", "/proc/escaped",
                     {str(host / "settings.yaml")!r}, {str(host / "escaped")!r}, "/tmp/scratch"]:
            try:
                open(path, "w").write("escaped")
                print(path, "WROTE")
            except OSError as error:
                print(path, type(error).__name__)
        """,
        workspace,
    )
    assert result.ok, result
    lines = result.stdout.decode().splitlines()
    assert lines[-1] == "/tmp/scratch WROTE"  # the sandbox's own tmpfs, gone with it
    assert not any("WROTE" in line for line in lines[:-1]), lines
    assert not Path("/usr/escaped").exists() and not Path("/etc/escaped").exists()
    assert not Path("/escaped").exists() and not Path("/tmp/scratch").exists()
    assert snapshot(host, skip=workspace) == before
    assert (host / "settings.yaml").read_text() == SETTINGS_TEXT


async def test_the_sandbox_cannot_reach_a_loopback_server_on_the_host(host: Path) -> None:
    accepted: list[object] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        result = await run_python(
            f"""
            import socket
            print("interfaces", [name for _, name in socket.if_nameindex()])
            for address in ["127.0.0.1", "10.255.255.1"]:
                try:
                    socket.create_connection((address, {port}), timeout=2)
                    print(address, "CONNECTED")
                except OSError as error:
                    print(address, type(error).__name__)
            """,
            workspace_for(host / "workspaces", ALICE),
        )
    finally:
        server.close()
    assert result.ok, result
    out = result.stdout.decode().splitlines()
    assert out == [
        "interfaces ['lo']",
        "127.0.0.1 ConnectionRefusedError",  # its own loopback, where nothing listens
        "10.255.255.1 OSError",  # no route at all: Network is unreachable
    ]
    assert accepted == []


async def test_a_fork_bomb_stops_at_the_process_limit_and_dies_whole(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    result = await run_python(
        """
        import os, time
        children = 0
        try:  # count how many forks are allowed ...
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                children += 1
        except OSError:
            print("forks refused after", children, flush=True)
        while True:  # ... then the classic bomb: every process forks for ever
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
        """,
        workspace,
        limits=dataclasses.replace(TIGHT, wall_seconds=3),
    )
    assert result.limit == "timeout" and result.exit_code is None, result
    refused_after = int(result.stdout.split()[-1])
    assert refused_after < TIGHT.processes
    assert no_processes_left(sandbox_uid(ALICE))


async def test_a_memory_bomb_fails_at_the_memory_limit(host: Path) -> None:
    result = await run_python(
        """
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
            print(len(hoard) * 16, "MiB", flush=True)
        """,
        workspace_for(host / "workspaces", ALICE),
    )
    assert result.exit_code == 1 and b"MemoryError" in result.stderr, result
    assert int(result.stdout.split()[-2]) < TIGHT.memory_bytes >> 20


async def test_an_infinite_loop_is_killed_at_the_cpu_limit(host: Path) -> None:
    # 2 s of CPU can take far longer than 10 s of a loaded machine's wall clock: the wall waits here.
    limits = dataclasses.replace(TIGHT, wall_seconds=60)
    result = await run_python("while True: pass", workspace_for(host / "workspaces", ALICE), limits)
    assert result.limit == "cpu" and not result.timed_out, result
    assert "CPU time limit of 2 s" in result.describe(TIGHT)


async def test_a_sleeping_tree_is_killed_whole_at_the_wall_clock_limit(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    result = await run_python(
        """
        import os, time
        if os.fork() == 0:  # a detached grandchild that would outlive its parent
            os.setsid()
            if os.fork() == 0:
                time.sleep(3)
                open("/workspace/survived", "w").write("yes")
            os._exit(0)
        time.sleep(60)
        """,
        workspace,
        limits=dataclasses.replace(TIGHT, wall_seconds=1),
    )
    assert result.timed_out and result.limit == "timeout" and result.exit_code is None, result
    assert "wall-clock limit of 1 s" in result.describe(SandboxLimits(wall_seconds=1))
    assert no_processes_left(sandbox_uid(ALICE))
    assert not (workspace / "survived").exists()


async def test_cancelling_a_run_kills_the_sandbox(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    run = run_python("import time; time.sleep(3); open('/workspace/finished', 'w').write('yes')", workspace)
    with pytest.raises(TimeoutError):  # a caller's own timeout, as call_tool has
        await asyncio.wait_for(run, 0.5)
    assert no_processes_left(sandbox_uid(ALICE))
    await asyncio.sleep(3)
    assert not (workspace / "finished").exists()


async def test_100_mb_of_output_is_cut_at_the_cap_and_the_writer_killed(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    result = await run_python(
        """
        import sys
        block = b"x" * (1 << 20)
        for _ in range(100):
            sys.stdout.buffer.write(block)
        sys.stdout.flush()
        open("/workspace/finished", "w").write("yes")
        """,
        workspace,
    )
    assert result.truncated and result.limit == "output" and result.exit_code is None, result
    assert result.stdout == b"x" * TIGHT.output_bytes
    assert not (workspace / "finished").exists()  # killed before it could finish
    assert no_processes_left(sandbox_uid(ALICE))


async def test_files_are_capped_and_a_workspace_over_quota_refuses_the_next_run(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    limits = dataclasses.replace(TIGHT, workspace_quota_bytes=3 << 20, file_bytes=2 << 20)
    result = await run_python(
        """
        import os
        for name in ["big", "a", "b"]:
            try:
                with open(name, "wb") as file:
                    file.write(os.urandom(5 << 20 if name == "big" else (1536 << 10)))
                print(name, "written")
            except OSError as error:
                print(name, error.strerror)
        """,
        workspace,
        limits=limits,
    )
    assert result.stdout.decode().splitlines() == ["big File too large", "a written", "b written"]
    assert (workspace / "big").stat().st_size == 2 << 20  # RLIMIT_FSIZE stopped it there
    assert result.workspace_bytes > limits.workspace_quota_bytes  # one run may overshoot ...
    with pytest.raises(WorkspaceFull, match="quota"):  # ... and the next one is refused
        await run_python("print('never')", workspace, limits=limits)
    (workspace / "big").unlink()
    (workspace / "a").unlink()
    assert (await run_python("print('again')", workspace, limits=limits)).ok


async def test_links_made_inside_point_nowhere_on_the_host_and_are_not_measured_through(host: Path) -> None:
    workspace = workspace_for(host / "workspaces", ALICE)
    result = await run_python(
        """
        import os
        os.symlink("/", "root")
        os.symlink("/etc/shadow", "shadow")
        try:
            os.link("/usr/bin/python3", "python3")  # a hard link to a file of the read-only system
            print("LINKED")
        except OSError as error:
            print("link", error.strerror)
        print(sorted(os.listdir("root")))
        """,
        workspace,
    )
    assert result.ok, result
    assert result.stdout.decode().splitlines() == [
        "link Invalid cross-device link",
        "['bin', 'dev', 'etc', 'lib', 'lib64', 'proc', 'sbin', 'tmp', 'usr', 'workspace']",
    ]
    assert result.workspace_bytes < 64 << 10  # the link to / was not followed when measuring


async def test_a_host_without_bubblewrap_gets_a_clear_refusal(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(host))  # where no bwrap is
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        await run_python("print('never')", workspace_for(host / "workspaces", ALICE))
