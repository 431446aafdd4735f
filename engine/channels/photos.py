"""Screenshots sent as photos: after a chat platform's reply, each screenshot the browser tool
saved while producing it (engine/tools/builtin/browser.py) follows as a photo, on the channels
that can send one (a `send_photo` method: Telegram, WhatsApp).

Which files: only those named by the browser tool's own results in this reply's tool calls, read
from the asking user's workspace, by a name of the tool's own pattern and without following links
(as the download endpoint does, engine/api/files.py). A name in the model's text or in a page's
text picks nothing, and no other user's workspace is ever looked in.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..api.files import MAX_BYTES
from ..api.files import _read as read_screenshot
from ..models.adapters.base import UpstreamError
from ..runtime import Runtime
from ..tools.builtin._machine import workspaces_of
from .base import ChannelConfig, Inbound, WebhookChannel
from .outbound import Outbound

BROWSER = "browser"
# The browser tool's whole answer for a screenshot; the page's URL (the one part a page chooses)
# comes before the name, so the name matched is always the one the tool wrote at the end.
_SAVED = re.compile(
    r"saved a screenshot of .* as screenshots/(screenshot-\d{8}-\d{6}-[0-9a-f]{6}\.png) "
    r"in the user's workspace \(\d+ bytes\)",
    re.DOTALL,
)


def screenshots_of(added: Sequence[dict[str, Any]]) -> list[str]:
    """The names of the screenshots the browser tool saved in these tool-loop messages, in order."""
    browser_calls = {
        str(call.get("id"))
        for message in added
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or ()
        if (call.get("function") or {}).get("name") == BROWSER
    }
    names = []
    for message in added:
        content = message.get("content")
        if message.get("role") == "tool" and str(message.get("tool_call_id")) in browser_calls:
            saved = _SAVED.fullmatch(content) if isinstance(content, str) else None
            if saved:
                names.append(saved.group(1))
    return names


async def send_screenshots(
    rt: Runtime,
    channel: WebhookChannel,
    config: ChannelConfig,
    to: Inbound,
    user: str,
    names: Sequence[str],
    log: Callable[[int, str], None],
) -> None:
    """Send `user`'s screenshots `names` to the chat `to`, one photo each; one that is gone or that
    the platform refuses is logged and skipped (the reply's text already named it)."""
    send = getattr(channel, "send_photo", None)
    if send is None or not names:
        return
    root = workspaces_of(rt.settings.tools, rt.settings.data_dir)
    outbound = Outbound(rt.clients, config.api_base)
    for name in names:
        png = await asyncio.to_thread(read_screenshot, root, user, name)
        if png is None or len(png) > MAX_BYTES:
            log(logging.WARNING, f"screenshot {name} not sent: not in the user's workspace")
            continue
        try:
            await send(outbound, config, to, name, png)
        except UpstreamError as exc:
            log(logging.WARNING, f"screenshot {name} not sent: {exc}")
