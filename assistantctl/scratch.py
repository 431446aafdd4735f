"""Private scratch folders on the controller for what a run ships (bundles hold secrets).

Each run gets `<base>/<kind>-<pid>-<start>-<random>/` (mode 0700) under a per-user base folder
(mode 0700: `$XDG_RUNTIME_DIR/assistantctl` when there is a runtime dir, else
`<tempdir>/assistantctl-<uid>`). The folder is removed when the run ends, by return or exception,
and by the handlers of SIGINT, SIGTERM and SIGHUP, which remove it and re-raise the signal. Only
SIGKILL escapes: the pid and start time in the folder's name let the next run see that its owner
is gone and remove it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .locking import process_start

CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_OWNED = re.compile(r"^[a-z]+-(\d+)-(\d+)-")


def scratch_base() -> Path:
    """This user's private base folder, made if missing; refuses one that is not ours (a symlink,
    another user's folder), since secrets go there."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir):
        base = Path(runtime_dir) / "assistantctl"
    else:
        base = Path(tempfile.gettempdir()) / f"assistantctl-{os.getuid()}"
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{base} is not a folder of this user: refusing to put secrets there")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(base, 0o700)
    return base


def remove_leftovers(base: Path) -> list[Path]:
    """Remove the folders of runs whose process is gone (killed by SIGKILL); returns them."""
    removed = []
    for entry in base.iterdir():
        owner = _OWNED.match(entry.name)
        if owner and entry.is_dir() and process_start(int(owner[1])) != int(owner[2]):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def private_workdir(kind: str, base: Path | None = None) -> Iterator[Path]:
    """A fresh 0700 folder for one run, removed on every way out (see the module docstring)."""
    base = base or scratch_base()
    remove_leftovers(base)
    pid = os.getpid()
    with _removed_on_signals() as register:
        path = Path(tempfile.mkdtemp(prefix=f"{kind}-{pid}-{process_start(pid)}-", dir=base))
        register(path)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _removed_on_signals() -> Iterator:
    """Install handlers that remove the registered folder and re-raise the signal with the handler
    that was there before (so Ctrl-C still raises KeyboardInterrupt, SIGTERM still terminates).
    Signals the process ignores stay ignored; outside the main thread Python allows no handlers."""
    paths: list[Path] = []

    def cleanup(signum: int, frame) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
        signal.signal(signum, previous.pop(signum))
        os.kill(os.getpid(), signum)

    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in CLEANUP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN:
                previous[signum] = signal.SIG_DFL if handler is None else handler
                signal.signal(signum, cleanup)
    try:
        yield paths.append
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
