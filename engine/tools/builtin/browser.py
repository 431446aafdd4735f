"""browser: open a page in Chromium, click, fill, read its text, take a screenshot.

One tool with an `action`, so a model sees one schema and one permission rule covers it. Each user
has a browser session of their own (engine/tools/builtin/browser_session.py: the sandboxed Chromium,
the allow-list on every request) that lives across calls until `idle_seconds` pass unused or the
model closes it. A screenshot is a PNG in the user's workspace (engine/tools/sandbox.py
`workspace_for`, under tools.machine.workspaces_dir), named in the answer; its owner downloads it
at GET /api/v1/workspace/screenshots/<name> (engine/api/files.py). Every call is audited as the
other machine tools' are. Playwright is imported only when the tool runs. Off by default: its risk
class is machine; its answers are text from the network (tainted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..base import Arguments, ToolContext, ToolError, ToolOutput
from ._machine import machine_tool, workspace
from .fetch import clip

Action = Literal["open", "click", "fill", "read", "screenshot", "close"]
SCREENSHOTS = "screenshots"  # the folder of the workspace screenshots go to


class BrowserArgs(Arguments):
    action: Action = Field(
        description="open: go to `url`. click: click `selector`. fill: type `text` into the field `selector`. "
        "read: the visible text of the page, or of `selector`. screenshot: save a PNG of the page to the "
        "user's workspace. close: end this browser session."
    )
    url: str | None = Field(None, max_length=2048, description="For open: an http or https URL.")
    selector: str | None = Field(
        None, max_length=500, description="For click, fill and read: a CSS selector or text=..., e.g. '#email'."
    )
    text: str | None = Field(None, max_length=10_000, description="For fill: the text to put in the field.")
    full_page: bool = Field(False, description="For screenshot: the whole page, not only the visible part.")

    @model_validator(mode="after")
    def _has_what_the_action_needs(self) -> BrowserArgs:
        needs = {"open": ("url",), "click": ("selector",), "fill": ("selector", "text")}
        missing = [name for name in needs.get(self.action, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"action '{self.action}' needs {' and '.join(missing)}")
        return self


async def browser(args: BrowserArgs, context: ToolContext) -> ToolOutput:
    try:
        from playwright.async_api import Error  # noqa: PLC0415 - only workers that browse load Playwright
    except ImportError:
        raise ToolError("the browser is not installed on this host (the playwright package)") from None
    from .browser_session import POOL, check_url  # noqa: PLC0415

    if args.action == "open":
        assert args.url is not None
        await check_url(args.url, context.settings.browser)  # refused before any browser starts
    if args.action == "close":
        closed = await POOL.close_session(context.user)
        return ToolOutput("the browser session is closed" if closed else "there was no browser session")
    session = await POOL.session(context.user, context.settings.browser)
    async with session.lock:
        try:
            text = await _act(args, session, context)
        except Error as failed:
            reason = f"the browser could not {args.action}: {str(failed).splitlines()[0][:300]}"
            raise ToolError(reason + _refused(session.take_blocked()), tainted=True) from None
        finally:
            session.last_used = time.monotonic()
        text += _refused(session.take_blocked())
    return ToolOutput(clip(text, context), tainted=True)


def _refused(blocked: list[str]) -> str:
    if not blocked:
        return ""
    lines = "\n".join(f"- {line}" for line in blocked[:20])
    return f"\n\nRequests refused (not in the allowed domains, a forbidden address, or failed):\n{lines}"


async def _act(args: BrowserArgs, session: Any, context: ToolContext) -> str:
    page = session.page
    if args.action == "open":
        await _navigate(session, page.goto(args.url))
        return f"opened {page.url} (title: {await page.title()!r})"
    if args.action == "click":
        await _navigate(session, page.click(args.selector))
        return f"clicked {args.selector}; now at {page.url} (title: {await page.title()!r})"
    if args.action == "fill":
        await page.fill(args.selector, args.text)
        return f"filled {args.selector}"
    if args.action == "read":
        text = await page.inner_text(args.selector or "body")
        return f"URL: {page.url}\n\n{text}"
    png = await page.screenshot(full_page=args.full_page, type="png")
    name = f"screenshot-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}.png"
    await asyncio.to_thread(_save, await workspace(context), name, png)
    return f"saved a screenshot of {page.url} as {SCREENSHOTS}/{name} in the user's workspace ({len(png)} bytes)"


def _save(workspace: Path, name: str, png: bytes) -> None:
    """Write the PNG as screenshots/<name> without following links: the workspace is writable by
    sandboxed code, which may have made `screenshots` a link to anywhere the engine can write."""
    owner = workspace.stat()
    with contextlib.suppress(FileExistsError):
        os.mkdir(workspace / SCREENSHOTS, 0o700)
    try:
        folder = os.open(workspace / SCREENSHOTS, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise ToolError(f"'{SCREENSHOTS}' in the workspace is not a folder: move it away to save screenshots") from None
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
        with os.fdopen(fd, "wb") as file:
            file.write(png)
        if os.geteuid() == 0:  # hand the files to the workspace's (sandbox) uid, as workspace_for does
            os.fchown(folder, owner.st_uid, owner.st_gid)
            os.chown(name, owner.st_uid, owner.st_gid, dir_fd=folder, follow_symlinks=False)
    finally:
        os.close(folder)


async def _navigate(session: Any, action: Any) -> None:
    """Run a navigating action, then open each checked redirect the routing handed back."""
    from playwright.async_api import Error  # noqa: PLC0415

    session.redirect_to = None
    try:
        await action
    except Error:
        if session.redirect_to is None:
            raise
    for _ in range(session.settings.max_redirects + 1):
        target, session.redirect_to = session.redirect_to, None
        if target is None:
            await session.page.wait_for_load_state()
            return
        try:
            await session.page.goto(target)
        except Error:
            if session.redirect_to is None:
                raise
    raise ToolError(f"more than {session.settings.max_redirects} redirects")


# machine_tool audits every call (user, arguments with secrets masked, outcome, duration).
TOOLS = (
    machine_tool(
        "browser",
        "Use a web browser: open a URL, click, fill form fields, read the page's text, save a screenshot "
        "to the user's workspace. The session (cookies, current page) stays between calls.",
        BrowserArgs,
        browser,
    ),
)
