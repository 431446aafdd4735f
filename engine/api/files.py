"""A user's screenshots through the API: the browser tool saves each as a PNG in the caller's
workspace (engine/tools/builtin/browser.py) and names it in its answer; its owner downloads it here.

Only the caller's own workspace is read (an admin too reads only their own: screenshots are not
history), only names the tool makes, and without following links: the workspace is writable by
sandboxed code, which could have made `screenshots` or a file in it a link to anywhere.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..pipeline import admit, runtime
from ..tools.builtin._machine import workspaces_of
from ..tools.sandbox import workspace_path

SCREENSHOT_NAME = re.compile(r"^screenshot-\d{8}-\d{6}-[0-9a-f]{6}\.png$")
MAX_BYTES = 64 << 20


def _workspaces_root(request: Request) -> Path:
    settings = runtime(request).settings
    return workspaces_of(settings.tools, settings.data_dir)


def _read(root: Path, user: str, name: str) -> bytes | None:
    if not root.is_dir():
        return None
    folder = workspace_path(root, user) / "screenshots"  # found, never made: a download makes nothing
    try:
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            return None
        return file.read(MAX_BYTES + 1)


async def screenshot(request: Request) -> Response:
    rt = runtime(request)
    user = await admit(request, rt, None, "history")
    name = request.path_params["name"]
    if not SCREENSHOT_NAME.match(name):
        raise ApiError(404, "unknown_file", "no such screenshot")
    data = await asyncio.to_thread(_read, _workspaces_root(request), user, name)
    if data is None or len(data) > MAX_BYTES:
        raise ApiError(404, "unknown_file", "no such screenshot")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-store"})
