"""Small actions on a host's deploy root: the deployment lock, the host's audit log, and retiring
a deployment from a host that left the spec.

Standard library only, and no imports from the project: like facts.py, this file's source is sent
to a remote host's Python as it is (one SSH round trip per action); the local host runs it
in-process. `dispatch` takes one JSON-able request and returns a JSON-able answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator

LOCK = "apply.lock"
AUDIT = "audit.log"


def _lock_path(root: str) -> str:
    return os.path.join(root, "run", LOCK)


@contextlib.contextmanager
def _lock_guard(root: str) -> Iterator[None]:
    """Serialise every change of the lock file on this host: an exclusive flock on the run folder
    (held by the kernel for this process only, so a killed run never leaves it behind)."""
    run = os.path.join(root, "run")
    os.makedirs(run, mode=0o750, exist_ok=True)
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _publish_lock(root: str, holder: dict, replace: bool) -> None:
    """Write the lock whole under a temporary name, then link it in (fails like O_EXCL when a lock
    exists) or, to take over a stale one, rename it over: readers never see a half-written lock."""
    path = _lock_path(root)
    fd, staged = tempfile.mkstemp(prefix=LOCK + ".", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(holder, out)
        if replace:
            os.replace(staged, path)
        else:
            os.link(staged, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


def read_lock(root: str) -> dict | None:
    try:
        with open(_lock_path(root), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"holder": "unreadable lock file", "token": None}


def acquire_lock(root: str, holder: dict, replace: str | None = None) -> dict:
    """Take the lock; answer who holds it when someone does. With `replace` (the token of a holder
    the controller found dead), take it over only if that holder still has it: of two runs taking
    over the same stale lock, one wins."""
    with _lock_guard(root):
        try:
            _publish_lock(root, holder, replace=False)
            return {"acquired": True, "holder": holder}
        except FileExistsError:
            held = read_lock(root)
        if replace is not None and held is not None and held.get("token") == replace:
            _publish_lock(root, holder, replace=True)
            return {"acquired": True, "holder": holder, "replaced": held}
        return {"acquired": False, "holder": held}


def release_lock(root: str, token: str | None) -> dict:
    """Remove the lock if `token` matches its holder's (None: whoever holds it, for `unlock --force`)."""
    with _lock_guard(root):
        held = read_lock(root)
        if held is None:
            return {"released": False, "holder": None}
        if token is not None and held.get("token") != token:
            return {"released": False, "holder": held}
        os.unlink(_lock_path(root))
        return {"released": True, "holder": held}


# The audit log is a hash chain: each line is sorted-key JSON carrying `seq` (1, 2, ...), `prev`
# (the sha256 of the previous line's bytes; GENESIS for the first chained line) and `hash` (the
# sha256 of the line without `hash`, so even the newest line cannot be edited unnoticed). Lines
# written before the chain existed carry none of these: they count as "unchained", and the chain
# starts after them. The controller's log uses the same functions (assistantctl/audit.py).
GENESIS = "0" * 64
CHAIN_FIELDS = ("seq", "prev", "hash")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _chained(entry: dict | None) -> bool:
    return entry is not None and all(k in entry for k in CHAIN_FIELDS)


def _seal(entry: dict, seq: int, prev: str) -> bytes:
    record = {k: v for k, v in entry.items() if k not in CHAIN_FIELDS}
    record.update(seq=seq, prev=prev)
    record["hash"] = _digest(json.dumps(record, sort_keys=True).encode())
    return json.dumps(record, sort_keys=True).encode()


def _next_link(lines: list[bytes]) -> tuple[int, str]:
    """(seq, prev) of the entry after `lines`: it links to the last line, whatever that line is."""
    for line in reversed(lines):
        entry = _parse(line)
        if _chained(entry):
            return int(entry["seq"]) + 1, _digest(lines[-1])
    return 1, GENESIS


def append_chained(path: str, entries: list[dict], more=None) -> list[dict]:
    """Append `entries` (plus `more(existing entries)`, if given) to the chain in `path`, under an
    exclusive flock so concurrent writers never fork the chain; returns each new line's {seq, hash}."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "r+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
        data = f.read()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline; a torn last write otherwise
        if tail:
            lines.append(tail)
        if more is not None:
            entries = [*more([e for e in map(_parse, lines) if e is not None]), *entries]
        out, heads = [b"\n"] if tail else [], []
        for entry in entries:
            seq, prev = _next_link(lines)
            line = _seal(entry, seq, prev)
            lines.append(line)
            out.append(line + b"\n")
            heads.append({"seq": seq, "hash": _digest(line)})
        f.write(b"".join(out))
        f.flush()
        os.fsync(f.fileno())
    return heads


def verify_chain(lines: list[bytes], anchors: list[dict] = ()) -> dict:
    """Check a log's chain. `anchors` are {seq, hash, source} recorded elsewhere (the other side's
    log): a missing or different line there means a truncated or rewritten tail. Returns
    {"problems": [[line number, message]], "chained", "unchained", "last_seq"}."""
    seqs = [e["seq"] for e in map(_parse, lines) if _chained(e)]
    problems, seen, expected, unchained, reported = [], set(), None, 0, False
    by_seq: dict = {}
    position, highest = 0, 0  # chained lines so far (this one included), the highest seq seen
    for number, line in enumerate(lines, 1):
        entry, problem = _parse(line), None
        if entry is None:
            problem = "not a JSON object (edited or torn)"
        elif not _chained(entry):
            if expected is None:
                unchained += 1
            else:
                problem = "entry without chain fields after the chain started (inserted or edited)"
        else:
            seq, body = entry["seq"], {k: v for k, v in entry.items() if k != "hash"}
            position += 1
            if _digest(json.dumps(body, sort_keys=True).encode()) != entry["hash"]:
                problem = f"entry {seq} does not match its own hash (edited)"
            elif seq != (expected or 1):
                if not isinstance(seq, int) or seq in seen or (expected or 1) in seqs[position:]:
                    problem = f"entry {seq} where {expected or 1} was expected (reordered)"
                else:
                    problem = f"entry {seq} where {expected or 1} was expected (entries deleted)"
            elif entry["prev"] != (GENESIS if expected is None else _digest(lines[number - 2])) and not reported:
                problem = f"entry {seq} does not link to the line before it (that line was edited or replaced)"
            if isinstance(seq, int):
                seen.add(seq)
                by_seq.setdefault(seq, line)
                highest = max(highest, seq)
            expected = highest + 1
        reported = problem is not None  # one edit, one message: the next line's broken link follows from it
        if problem:
            problems.append([number, problem])
    for anchor in anchors:
        line, where = by_seq.get(anchor["seq"]), f"entry {anchor['seq']} recorded by {anchor['source']}"
        if line is None:
            problems.append([len(lines), f"{where} is missing (tail truncated or log replaced)"])
        elif _digest(line) != anchor["hash"]:
            problems.append([len(lines), f"{where} differs from this log's (rewritten)"])
    return {"problems": problems, "chained": len(seqs), "unchained": unchained, "last_seq": seqs[-1] if seqs else 0}


def _audit_lines(root: str) -> list[bytes]:
    try:
        with open(os.path.join(root, "logs", AUDIT), "rb") as f:
            data = f.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines


def append_audit(root: str, entry: dict) -> dict:
    """Append one chained entry to <root>/logs/audit.log; answers its {seq, hash} for the controller."""
    logs = os.path.join(root, "logs")
    os.makedirs(logs, mode=0o750, exist_ok=True)
    [head] = append_chained(os.path.join(logs, AUDIT), [entry])
    return {"written": True, "head": head}


def verify_audit(root: str, anchors: list[dict] = ()) -> dict:
    """verify_chain of the host's log, plus the newest controller head each controller left in it."""
    lines = _audit_lines(root)
    heads = {}
    for entry in map(_parse, lines):
        if entry and isinstance(entry.get("controller_head"), dict):
            heads[entry["controller_head"].get("log")] = entry["controller_head"]
    return {**verify_chain(lines, anchors), "controller_heads": list(heads.values())}


def last_audit(root: str, actions: list[str]) -> dict:
    """The newest entry whose action is one of `actions`, only if the chain up to it (and the link to
    it from the next line) verifies; otherwise {"entry": None, "problem": "line N: ..."}."""
    lines = _audit_lines(root)
    for number in range(len(lines), 0, -1):
        entry = _parse(lines[number - 1])
        if entry is None or entry.get("action") not in actions:
            continue
        problems = verify_chain(lines[: number + 1])["problems"]
        if problems:
            line, message = problems[0]
            return {"entry": None, "problem": f"logs/{AUDIT} line {line}: {message}"}
        return {"entry": entry, "chained": _chained(entry)}
    return {"entry": None}


# What `retire` removes: everything apply put there but the data, the logs (with the host's audit
# log, which records the retirement) and the lock, unless `purge`.
RETIRED = ("current", "releases", "venvs", "tmp")
KEPT = ("data", "logs")


def retire(root: str, purge: bool, stop_seconds: float) -> dict:
    """Stop supervisord (and with it every program) and remove the deployment under `root`.

    Nothing is removed when the services do not stop within `stop_seconds`.
    """
    pid_file = os.path.join(root, "run", "supervisord.pid")
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGTERM)  # supervisord stops its programs, each with its own grace time
    except (OSError, ValueError):
        pid = None
    deadline = time.monotonic() + stop_seconds
    while pid is not None and _alive(pid):
        if time.monotonic() > deadline:
            error = f"supervisord (pid {pid}) still runs after {stop_seconds:.0f} s; nothing removed"
            return {"ok": False, "error": error}
        time.sleep(0.2)
    removed = []
    for name in sorted(os.listdir(root)) if purge else RETIRED:
        path = os.path.join(root, name)
        if name == "run":
            continue  # it holds the lock of this very action: emptied below, removed by `rmdir_root`
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        else:
            continue
        removed.append(name)
    run = os.path.join(root, "run")
    for name in os.listdir(run) if os.path.isdir(run) else ():
        if name != LOCK:
            path = os.path.join(run, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    kept = [name for name in KEPT if os.path.exists(os.path.join(root, name))]
    return {"ok": True, "stopped": pid is not None, "removed": removed, "kept": kept}


def rmdir_root(root: str) -> dict:
    """After a purge, once the lock is released: the empty run folder and the root itself."""
    for path in (os.path.join(root, "run"), root):
        with contextlib.suppress(OSError):
            os.rmdir(path)
    return {"removed": not os.path.exists(root)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (an exited child nobody reaped) is gone for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def dispatch(request: dict) -> dict:
    action, root = request["action"], request["root"]
    if action == "lock":
        return acquire_lock(root, {**request["holder"], "locked_at": time.time()}, request.get("replace"))
    if action == "unlock":
        return release_lock(root, request.get("token"))
    if action == "read_lock":
        return {"holder": read_lock(root)}
    if action == "audit":
        return append_audit(root, request["entry"])
    if action == "last_audit":
        return last_audit(root, request["actions"])
    if action == "verify_audit":
        return verify_audit(root, request.get("anchors", []))
    if action == "retire":
        return retire(root, bool(request.get("purge")), float(request.get("stop_seconds", 120)))
    if action == "rmdir_root":
        return rmdir_root(root)
    raise ValueError(f"unknown host action {action!r}")


if __name__ == "__main__":
    json.dump(dispatch(json.loads(sys.stdin.readline())), sys.stdout)
