"""The browser tool's machinery: one Chromium per worker, in bubblewrap, and a Playwright context per
user whose every request passes the allow-list.

Isolation. Chromium is started through a wrapper script that `exec`s bwrap: new namespaces of every
kind (network included: inside, only the sandbox's own loopback exists), /usr and a few /etc entries
read-only, a private tmpfs /tmp (profile, caches) and /dev/shm, nothing of the engine (data_dir,
settings, secrets, workspaces). Playwright speaks to it over pipes (--remote-debugging-pipe), so
it needs no network of its own. When the engine runs as root, setpriv first drops it to an
unprivileged uid. Chromium's own sandbox is off (--no-sandbox): it needs user namespaces that bwrap
forbids inside, and bwrap is the boundary here.

Network. Chromium cannot reach anything itself; every http(s) request the page makes is routed
(`BrowserContext.route`) to `_route`, which checks the URL (`check_url`: allowed domain, every
resolved address public or in allowed_networks) and performs it from the engine side with
`route.fetch(max_redirects=0)`. Each redirect is checked again: a sub-resource's redirects are
followed here, a page navigation's redirect is handed back to the tool (`Session.redirect_to`),
which opens the new URL itself, so the page's address stays true. Refused requests are aborted and
listed in `Session.blocked` for the model. Not covered: the address is resolved again by the
fetching side after the check (a DNS-rebinding window of one lookup); WebSockets are not routed and
fail (no network inside); a 307/308 navigation redirect is reopened as a GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from ...settings import BrowserToolSettings
from ..base import ToolError
from ..sandbox import ETC_ENTRIES, sandbox_uid

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
]  # fmt: skip
# /etc entries Debian's chromium launcher script and the browser read, on top of the sandbox's own.
BROWSER_ETC = ("chromium", "chromium.d")
REDIRECTS = {301, 302, 303, 307, 308}
REAP_EVERY_SECONDS = 5.0


async def check_url(raw: str, settings: BrowserToolSettings) -> None:
    """Raise ToolError unless the browser may request `raw`: http(s), no credentials, a host in the
    allowed domains (an empty list allows none), and every address it resolves to public or in
    allowed_networks."""
    from ..net import domain_allowed, forbidden, resolve  # noqa: PLC0415 - httpx: loaded by the first call

    parts = urlsplit(raw)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise ToolError("only http and https URLs can be opened")
    if parts.username or parts.password:
        raise ToolError("URLs with credentials are not opened")
    if not settings.allowed_domains or not domain_allowed(host, settings.allowed_domains):
        raise ToolError(f"'{host}' is not in the browser's allowed domains")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ToolError("that URL has an invalid port") from None
    addresses = await resolve(host, port)
    bad = [a for a in addresses if forbidden(a, settings.allowed_networks)]
    if bad or not addresses:
        raise ToolError(f"'{host}' resolves to an address the browser may not reach ({bad[0] if bad else 'none'})")


def wrapper_script(folder: Path) -> Path:
    """Write the executable Playwright starts as "chromium": it execs bwrap around /usr/bin/chromium."""
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if bwrap is None or setpriv is None or not os.path.exists(CHROMIUM):
        raise ToolError("the browser is not installed on this host (apt-get install chromium bubblewrap)")
    drop: list[str] = []
    if os.geteuid() == 0:
        uid = sandbox_uid("assistantctl-browser")
        drop = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    mounts = ["--ro-bind", "/usr", "/usr", "--tmpfs", "/usr/local"]
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{link}"):
            mounts += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            mounts += ["--ro-bind", f"/{link}", f"/{link}"]
    for entry in (*ETC_ENTRIES, *BROWSER_ETC):
        if os.path.lexists(f"/etc/{entry}"):
            mounts += ["--ro-bind", f"/etc/{entry}", f"/etc/{entry}"]
    mounts += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp", "--remount-ro", "/"]
    command = [
        *drop, bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
        "--cap-drop", "ALL", "--hostname", "browser", "--clearenv", "--setenv", "HOME", "/tmp",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", *mounts, CHROMIUM,
    ]  # fmt: skip
    script = folder / "chromium"
    script.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
    script.chmod(0o700)
    return script


@dataclass
class Session:
    """One user's browser context and page; `lock` serialises that user's actions."""

    context: Any
    page: Any
    settings: BrowserToolSettings
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    blocked: list[str] = field(default_factory=list)  # refused requests not yet told to the model
    redirect_to: str | None = None  # a navigation's checked redirect, for the tool to open

    def take_blocked(self) -> list[str]:
        blocked, self.blocked = self.blocked, []
        return blocked

    async def _route(self, route: Any) -> None:
        from playwright.async_api import Error  # noqa: PLC0415 - loaded with the browser

        request = route.request
        url = request.url
        try:
            await check_url(url, self.settings)
            response = await route.fetch(max_redirects=0, timeout=self.settings.timeout_seconds * 1000)
            for _ in range(self.settings.max_redirects + 1):
                location = response.headers.get("location")
                if response.status not in REDIRECTS or not location:
                    await route.fulfill(response=response)
                    return
                url = urljoin(url, location)
                await check_url(url, self.settings)
                if request.is_navigation_request() and request.frame == self.page.main_frame:
                    self.redirect_to = url  # the tool opens it, so the page's URL is the real one
                    await route.abort("aborted")
                    return
                response = await route.fetch(url=url, max_redirects=0, timeout=self.settings.timeout_seconds * 1000)
            raise ToolError(f"more than {self.settings.max_redirects} redirects")
        except ToolError as refused:
            self.blocked.append(f"{url} ({refused})")
            await route.abort("blockedbyclient")
        except Error as failed:
            self.blocked.append(f"{url} (failed: {str(failed).splitlines()[0][:200]})")
            with contextlib.suppress(Error):
                await route.abort("failed")


class BrowserPool:
    """This worker's Chromium, started at the first use, and the users' sessions; sessions unused for
    `idle_seconds` are closed, and the browser with the last of them."""

    def __init__(self) -> None:
        self._reset(None)

    def _reset(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._playwright: Any = None
        self._browser: Any = None
        self._folder: Path | None = None
        self._loop = loop
        self._sessions: dict[str, Session] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    @property
    def users(self) -> list[str]:
        """The users with an open session."""
        return list(self._sessions)

    @property
    def running(self) -> bool:
        """Whether this worker's Chromium is started."""
        return self._browser is not None

    async def session(self, user: str, settings: BrowserToolSettings) -> Session:
        """The user's session, made (and the browser started) when there is none."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): the old one's objects are unusable
            self._reset(loop)
        async with self._starting:
            found = self._sessions.get(user)
            if found is not None:
                found.last_used = time.monotonic()
                return found
            browser = await self._ensure_browser(settings)
            context = await browser.new_context(
                viewport={"width": settings.viewport_width, "height": settings.viewport_height},
                accept_downloads=False,
                service_workers="block",  # a service worker's requests would bypass the routing
            )
            context.set_default_timeout(settings.timeout_seconds * 1000)
            page = await context.new_page()
            session = Session(context, page, settings)
            await context.route("**/*", session._route)
            self._sessions[user] = session
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.create_task(self._reap())
            return session

    async def _ensure_browser(self, settings: BrowserToolSettings) -> Any:
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        from playwright.async_api import async_playwright  # noqa: PLC0415 - only workers that browse pay for it

        self._folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="assistantctl-browser-"))
        executable = await asyncio.to_thread(wrapper_script, self._folder)
        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, timeout=max(30.0, settings.timeout_seconds) * 1000
        )
        return self._browser

    async def close_session(self, user: str) -> bool:
        session = self._sessions.pop(user, None)
        if session is None:
            return False
        with contextlib.suppress(Exception):  # a crashed browser has nothing left to close
            await session.context.close()
        if not self._sessions:
            await self._close_browser()
        return True

    async def close_all(self) -> None:
        """Close every session and the browser (at shutdown, and by tests)."""
        if self._loop is not asyncio.get_running_loop():
            return
        for user in list(self._sessions):
            await self.close_session(user)
        await self._close_browser()
        if self._reaper is not None:
            self._reaper.cancel()

    async def _close_browser(self) -> None:
        browser, playwright, folder = self._browser, self._playwright, self._folder
        self._browser = self._playwright = self._folder = None
        with contextlib.suppress(Exception):
            if browser is not None:
                await browser.close()
        with contextlib.suppress(Exception):
            if playwright is not None:
                await playwright.stop()
        if folder is not None:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _reap(self) -> None:
        while self._sessions or self._browser is not None:
            await asyncio.sleep(REAP_EVERY_SECONDS)
            now = time.monotonic()
            for user, session in list(self._sessions.items()):
                if now - session.last_used > session.settings.idle_seconds and not session.lock.locked():
                    await self.close_session(user)


POOL = BrowserPool()
