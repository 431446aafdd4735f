"""web_page_text: the readable text of a web page (trafilatura drops menus, ads and scripts)."""

from __future__ import annotations

import asyncio

from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError, ToolOutput
from .fetch import clip, header


class PageArgs(Arguments):
    url: str = Field(max_length=2048, description="An http or https URL of a web page.")


def extract(html: str, url: str) -> str | None:
    """The main text of `html` as Markdown-ish plain text, or None when there is none."""
    # trafilatura and lxml cost every worker ~11 MB: loaded by the first page read, not at start.
    import trafilatura  # noqa: PLC0415

    return trafilatura.extract(
        html, url=url, output_format="markdown", include_links=True, include_tables=True, favor_recall=True
    )


async def web_page_text(args: PageArgs, context: ToolContext) -> ToolOutput:
    from ..net import safe_get  # noqa: PLC0415 - see http_fetch

    page = await safe_get(args.url, context.settings.fetch, headers={"Accept": "text/html,application/xhtml+xml"})
    if page.status >= 400:
        raise ToolError(f"the page answered HTTP {page.status}")
    # Parsing HTML is CPU work in lxml: a worker thread keeps the event loop free.
    text = await asyncio.to_thread(extract, page.text(), page.url)
    if not text:
        raise ToolError("no readable text found on that page")
    return ToolOutput(header(page) + clip(text, context), tainted=True)


TOOLS = (
    Tool(
        "web_page_text",
        "Read a web page: its main text without menus and scripts.",
        PageArgs,
        web_page_text,
        risk="network",
    ),
)
