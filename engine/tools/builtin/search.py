"""web_search: a query to the operator's SearXNG instance (`settings.search.url`, JSON format).

The instance is the operator's own choice, often on a private network, so it is reached directly
(not through the public-address guard of net.py); its results are network text all the same.
"""

from __future__ import annotations

from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError, ToolOutput
from .fetch import clip


class SearchArgs(Arguments):
    query: str = Field(min_length=1, max_length=400, description="What to search the web for.")
    max_results: int | None = Field(None, ge=1, le=50, description="At most this many results.")
    language: str | None = Field(None, max_length=16, description="Result language, e.g. 'en' or 'de'.")


async def web_search(args: SearchArgs, context: ToolContext) -> ToolOutput:
    settings = context.settings.search
    if not settings.url:
        raise ToolError("web search is not configured (tools.settings.search.url)")
    import httpx  # noqa: PLC0415 - ~3.5 MB per worker: loaded by the first search, not at start

    params = {"q": args.query, "format": "json"}
    if args.language:
        params["language"] = args.language
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=settings.timeout_seconds) as client:
            response = await client.get(settings.url.rstrip("/") + "/search", params=params)
        response.raise_for_status()
        results = response.json().get("results", [])
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        raise ToolError(f"the search service failed: {type(exc).__name__}") from None
    limit = min(args.max_results or settings.max_results, settings.max_results)
    lines = []
    for rank, item in enumerate(r for r in results if isinstance(r, dict) and r.get("url")):
        if rank == limit:
            break
        title = " ".join(str(item.get("title") or "").split())
        snippet = " ".join(str(item.get("content") or "").split())
        lines.append(f"{rank + 1}. {title}\n   {item['url']}\n   {snippet}".rstrip())
    if not lines:
        return ToolOutput(f"no results for '{args.query}'", tainted=True)
    return ToolOutput(clip("\n".join(lines), context), tainted=True)


TOOLS = (
    Tool("web_search", "Search the web; returns titles, URLs and snippets.", SearchArgs, web_search, risk="network"),
)
