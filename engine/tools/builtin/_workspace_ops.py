"""The workspace file operations, run INSIDE the sandbox as `python3 -I -c <this file's source>`.

It must stay a standalone program of the standard library (the sandbox has Debian's python3 and
nothing of the engine). The request comes as JSON on stdin, the answer goes as JSON on stdout:
{"ok": true, "text": ...} or {"ok": false, "error": ...}. Every path is relative to /workspace and
walked one component at a time with openat(O_NOFOLLOW): a symbolic link anywhere on the way, a
hard-linked file, `..` or an absolute path is refused. The sandbox already confines what a run can
reach; this keeps the tools' own promise ("files of your workspace, and nothing they point to").
The registry imports every module of this folder: nothing here runs on import.
"""

import errno
import json
import os
import re
import stat
import subprocess
import sys
import tempfile

ROOT = "/workspace"
MAX_LIST = 500
MAX_MATCHES = 200
MAX_SEARCHED_FILE = 2 << 20


class Refused(Exception):
    pass


def parts(path):
    """The components of a workspace path; refuses what could leave the workspace."""
    if not isinstance(path, str) or "\0" in path:
        raise Refused("the path must be text without NUL characters")
    if path.startswith("/"):
        raise Refused(f"'{path}' is an absolute path: give a path relative to the workspace")
    items = [item for item in path.split("/") if item not in ("", ".")]
    if ".." in items:
        raise Refused(f"'{path}' goes up with '..': paths stay inside the workspace")
    return items


def _lstat(name, fd):
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir(items, create=False):
    """A descriptor of the folder `items`, opened without following any link (made when `create`)."""
    fd = os.open(ROOT, os.O_RDONLY | os.O_DIRECTORY)
    walked = []
    try:
        for name in items:
            walked.append(name)
            info = _lstat(name, fd)
            if info is None and create:
                os.mkdir(name, 0o755, dir_fd=fd)
                info = _lstat(name, fd)
            if info is None:
                raise Refused(f"there is no folder '{'/'.join(walked)}' in the workspace")
            if stat.S_ISLNK(info.st_mode):
                raise Refused(f"'{'/'.join(walked)}' is a symbolic link: links are not followed")
            if not stat.S_ISDIR(info.st_mode):
                raise Refused(f"'{'/'.join(walked)}' is not a folder")
            # O_NOFOLLOW again: a link put there since the check is refused by the kernel (ELOOP)
            next_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(path, flags, create=False):
    """(descriptor, display path) of a regular, singly linked file of the workspace."""
    items = parts(path)
    if not items:
        raise Refused("name a file, not the workspace itself")
    folder = open_dir(items[:-1], create=create)
    try:
        info = _lstat(items[-1], folder)
        if info is None and not create:
            raise Refused(f"there is no file '{path}' in the workspace")
        if info is not None:
            check_file(info, path)
        try:
            fd = os.open(items[-1], flags | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o644, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused(f"'{path}' is a symbolic link: links are not followed") from None
            raise
        check_file(os.fstat(fd), path)
        return fd
    finally:
        os.close(folder)


def check_file(info, path):
    if stat.S_ISLNK(info.st_mode):
        raise Refused(f"'{path}' is a symbolic link: links are not followed")
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"'{path}' is not a regular file")
    if info.st_nlink > 1:
        raise Refused(f"'{path}' is a hard link (it has {info.st_nlink} names): hard links are refused")


def read_all(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def op_list(request):
    path = request.get("path") or "."
    fd = open_dir(parts(path))
    lines = []
    try:
        walker = os.fwalk(".", dir_fd=fd, follow_symlinks=False)
        for top, dirs, files, top_fd in walker:
            dirs.sort()
            for name in sorted(dirs + files):
                info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
                shown = os.path.normpath(os.path.join(top, name))
                if stat.S_ISDIR(info.st_mode):
                    lines.append(f"{shown}/")
                elif stat.S_ISLNK(info.st_mode):
                    lines.append(f"{shown} (symbolic link, not followed)")
                else:
                    lines.append(f"{shown} ({info.st_size} bytes)")
            if not request.get("recursive"):
                break
            if len(lines) >= MAX_LIST:
                break
    finally:
        os.close(fd)
    if not lines:
        return f"'{path}' is empty"
    more = f"\n(first {MAX_LIST} entries shown)" if len(lines) > MAX_LIST else ""
    return "\n".join(lines[:MAX_LIST]) + more


def op_read(request):
    fd = open_file(request["path"], os.O_RDONLY)
    try:
        data = read_all(fd)
    finally:
        os.close(fd)
    offset, limit = request.get("offset", 0), request["limit"]
    part = data[offset : offset + limit]
    text = part.decode("utf-8", "replace")
    if len(data) > offset + limit or offset:
        text += f"\n(bytes {offset}-{offset + len(part)} of {len(data)} shown)"
    return text


def op_search(request):
    needle = request["text"]
    flags = re.IGNORECASE if request.get("ignore_case") else 0
    pattern = re.compile(re.escape(needle), flags)
    fd = open_dir(parts(request.get("path") or "."))
    found = []
    try:
        for top, dirs, files, top_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            dirs.sort()
            for name in sorted(files):
                info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1 or info.st_size > MAX_SEARCHED_FILE:
                    continue
                file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=top_fd)
                try:
                    data = read_all(file_fd)
                finally:
                    os.close(file_fd)
                if b"\0" in data:
                    continue  # binary
                shown = os.path.normpath(os.path.join(top, name))
                for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                    if pattern.search(line):
                        found.append(f"{shown}:{number}: {line[:300]}")
                        if len(found) >= MAX_MATCHES:
                            return "\n".join(found) + f"\n(first {MAX_MATCHES} matches shown)"
    finally:
        os.close(fd)
    return "\n".join(found) if found else f"no file contains '{needle}'"


def write_whole(fd, data):
    os.ftruncate(fd, 0)
    view = memoryview(data)
    position = 0
    while position < len(data):
        position += os.pwrite(fd, view[position:], position)


def op_write(request):
    data = request["content"].encode()
    fd = open_file(request["path"], os.O_WRONLY, create=True)
    try:
        write_whole(fd, data)
    finally:
        os.close(fd)
    return f"wrote {len(data)} bytes to {request['path']}"


def op_edit(request):
    old, new = request["old"], request["new"]
    fd = open_file(request["path"], os.O_RDWR)
    try:
        text = read_all(fd).decode("utf-8")
        count = text.count(old)
        if count == 0:
            raise Refused(f"the text to replace does not occur in {request['path']}")
        if count > 1:
            raise Refused(f"the text to replace occurs {count} times in {request['path']}: give more of it")
        write_whole(fd, text.replace(old, new, 1).encode())
    except UnicodeDecodeError:
        raise Refused(f"{request['path']} is not UTF-8 text") from None
    finally:
        os.close(fd)
    return f"replaced 1 occurrence in {request['path']}"


def patch_targets(diff, strip):
    """The workspace paths a unified diff touches, as `patch -p<strip>` would name them."""
    targets = []
    for line in diff.splitlines():
        if not line.startswith(("--- ", "+++ ")):
            continue
        name = line[4:].split("\t", 1)[0].strip()
        if name == "/dev/null":
            continue
        if name.startswith("/"):
            raise Refused(f"the diff names the absolute path '{name}'")
        items = [item for item in name.split("/") if item]
        if len(items) <= strip:
            raise Refused(f"the diff names '{name}', which has no path left after stripping {strip}")
        targets.append("/".join(items[strip:]))
    if not targets:
        raise Refused("this is not a unified diff: no '--- ' and '+++ ' file lines")
    return targets


def op_patch(request):
    diff, strip = request["diff"], request["strip"]
    for target in patch_targets(diff, strip):
        items = parts(target)
        fd = open_dir(items[:-1]) if _exists_dir(items[:-1]) else None
        if fd is not None:
            try:
                info = _lstat(items[-1], fd)
                if info is not None:
                    check_file(info, target)
            finally:
                os.close(fd)
    with tempfile.NamedTemporaryFile("w", dir="/tmp", suffix=".diff", delete=False) as handle:
        handle.write(diff)
    run = subprocess.run(
        ["/usr/bin/patch", f"-p{strip}", "--batch", "--forward", "--no-backup-if-mismatch",
         "--reject-file=-", "-i", handle.name],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = (run.stdout + run.stderr).strip()
    if run.returncode != 0:
        raise Refused(f"patch did not apply (status {run.returncode}): {output}")
    return output or "patched"


def _exists_dir(items):
    try:
        os.close(open_dir(items))
    except Refused as exc:
        if str(exc).startswith("there is no folder"):
            return False  # patch makes it; nothing there to be a link
        raise
    return True


OPERATIONS = {
    "list": op_list, "read": op_read, "search": op_search, "write": op_write, "edit": op_edit,
    "patch": op_patch,
}  # fmt: skip


def main():
    request = json.loads(sys.stdin.read())
    try:
        answer = {"ok": True, "text": OPERATIONS[request["op"]](request)}
    except Refused as exc:
        answer = {"ok": False, "error": str(exc)}
    except OSError as exc:
        answer = {"ok": False, "error": f"{exc.strerror or exc}"}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
