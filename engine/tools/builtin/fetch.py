"""http_fetch: the text of a URL, through the SSRF-safe GET of engine/tools/net.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError, ToolOutput

if TYPE_CHECKING:
    from ..net import Page

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/rss", "+json", "+xml")


class FetchArgs(Arguments):
    url: str = Field(max_length=2048, description="An http or https URL.")


def clip(text: str, context: ToolContext, note: str = "") -> str:
    """`text` cut to fit the output limit, saying so (room is left for the header lines)."""
    room = context.settings.output_limit_bytes - 200
    data = text.encode("utf-8")
    if len(data) <= room:
        return text
    return data[:room].decode("utf-8", "ignore") + f"\n[... cut at {room} bytes{note}]"


def header(page: Page) -> str:
    cut = " (body cut at the size limit)" if page.truncated else ""
    return f"URL: {page.url}\nStatus: {page.status}\nContent-Type: {page.content_type or '-'}{cut}\n\n"


async def http_fetch(args: FetchArgs, context: ToolContext) -> ToolOutput:
    from ..net import safe_get  # noqa: PLC0415 - httpx costs every worker ~3.5 MB: loaded by the first fetch

    page = await safe_get(args.url, context.settings.fetch)
    kind = page.content_type.split(";")[0].strip().lower()
    if kind and not any(marker in kind for marker in _TEXT_TYPES):
        raise ToolError(f"'{kind}' is not text ({len(page.body)} bytes); only text is shown")
    return ToolOutput(header(page) + clip(page.text(), context), tainted=True)


TOOLS = (
    Tool(
        "http_fetch",
        "Fetch a URL and return its raw text (HTML as is). For reading a web page use web_page_text.",
        FetchArgs,
        http_fetch,
        risk="network",
    ),
)
