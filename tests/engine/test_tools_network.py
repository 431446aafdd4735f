"""The network tools against a fake web server and a fake SearXNG on loopback (no other network):
the SSRF guard (addresses, redirects, pinned connections), the allow-list and limits, page text
extraction, search, and the taint mark on everything that came from the network."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from assistantctl.engine.settings import FetchToolSettings, SearchToolSettings, ToolsSettings
from assistantctl.engine.tools import ToolResult, call_tool, load_registry, net
from fake_models import free_port, serve_in_thread
from test_tools_context import fake_context

ARTICLE = """<html><head><title>Otters</title><script>var tracking = "SCRIPT-NOISE";</script></head>
<body><nav><a href="/">Home</a> | <a href="/shop">MENU-NOISE shop</a></nav>
<article><h1>Sea otters hold hands</h1>
<p>Sea otters hold hands while they sleep so that they do not drift apart on the current.
A group of resting otters is called a raft, and a raft can count more than a hundred animals.</p>
<p>They wrap themselves in kelp as well, which anchors them to the sea floor during the night.</p>
</article><footer>FOOTER-NOISE copyright</footer></body></html>"""


class FakeWeb:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def routes(self) -> list[Route]:
        async def record(request: Request) -> Response:
            self.requests.append(
                {"path": request.url.path, "host": request.headers.get("host"), **request.query_params}
            )
            path = request.url.path
            if path == "/plain":
                return PlainTextResponse("plain words")
            if path == "/article":
                return Response(ARTICLE, media_type="text/html; charset=utf-8")
            if path == "/big":
                return PlainTextResponse("y" * 50_000)
            if path == "/slow":
                await asyncio.sleep(30)
            if path == "/binary":
                return Response(b"\x89PNG....", media_type="image/png")
            if path == "/to-plain":
                return RedirectResponse("/plain", status_code=302)
            if path == "/to-metadata":
                return RedirectResponse("http://169.254.169.254/latest/meta-data", status_code=302)
            if path == "/loop":
                return RedirectResponse("/loop", status_code=307)
            if path == "/search":
                return self.search(request)
            return PlainTextResponse("missing", status_code=404)

        return [Route("/{path:path}", record)]

    def search(self, request: Request) -> Response:
        if request.query_params.get("q") == "broken":
            return PlainTextResponse("boom", status_code=500)
        results = [
            {"title": f"Result  {i}", "url": f"https://example.org/{i}", "content": f"snippet\n{i}"} for i in range(8)
        ]
        return JSONResponse({"query": request.query_params.get("q"), "results": results})


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    fake = FakeWeb()
    server, thread = serve_in_thread(fake.routes(), fake.port)
    yield fake
    server.should_exit = True
    thread.join(5)


LOOPBACK = FetchToolSettings(allowed_networks=["127.0.0.1/32"], timeout_seconds=5)


def _settings(fetch: FetchToolSettings = LOOPBACK, **kwargs: Any) -> ToolsSettings:
    return ToolsSettings(enabled=["http_fetch", "web_page_text", "web_search"], fetch=fetch, **kwargs)


async def _call(tmp_path: Path, tool: str, args: dict, settings: ToolsSettings) -> ToolResult:
    return await call_tool(load_registry(settings), tool, json.dumps(args), fake_context(tmp_path, settings=settings))


def _paths(web: FakeWeb) -> list[str]:
    return [r["path"] for r in web.requests]


# -- the address guard ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_inner_addresses_are_forbidden(address: str):
    assert net.forbidden(ipaddress.ip_address(address), [])


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str):
    assert not net.forbidden(ipaddress.ip_address(address), [])


def test_allowed_networks_open_a_private_range_and_nothing_else():
    assert not net.forbidden(ipaddress.ip_address("10.9.8.7"), ["10.0.0.0/8"])
    assert net.forbidden(ipaddress.ip_address("192.168.0.1"), ["10.0.0.0/8"])


def test_the_domain_allow_list_takes_subdomains_but_not_lookalikes():
    allowed = ["example.org"]
    assert net.domain_allowed("example.org", allowed) and net.domain_allowed("docs.Example.org.", allowed)
    assert not net.domain_allowed("evilexample.org", allowed) and not net.domain_allowed("example.org.evil", allowed)
    assert net.domain_allowed("anything.test", [])


async def test_loopback_is_refused_by_default_before_any_request(tmp_path: Path, web: FakeWeb):
    before = len(web.requests)
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/plain")}, _settings(FetchToolSettings()))
    assert result.outcome == "error"
    assert "resolves to an address tools may not reach (127.0.0.1)" in result.content
    assert len(web.requests) == before


async def test_localhost_by_name_is_refused_too(tmp_path: Path, web: FakeWeb):
    url = f"http://localhost:{web.port}/plain"
    result = await _call(tmp_path, "http_fetch", {"url": url}, _settings(FetchToolSettings()))
    assert "may not reach" in result.content


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "2130706433"])
async def test_other_spellings_of_this_host_are_refused(tmp_path: Path, web: FakeWeb, host: str):
    result = await _call(tmp_path, "http_fetch", {"url": f"http://{host}:{web.port}/"}, _settings(FetchToolSettings()))
    assert result.outcome == "error" and "may not reach" in result.content


async def test_an_allowed_network_is_fetched_and_the_text_is_tainted(tmp_path: Path, web: FakeWeb):
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/plain")}, _settings())
    assert result.ok and result.tainted
    assert "Status: 200" in result.content and result.content.endswith("plain words")


async def test_every_redirect_is_checked_again(tmp_path: Path, web: FakeWeb):
    followed = await _call(tmp_path, "http_fetch", {"url": web.url("/to-plain")}, _settings())
    assert followed.ok and "plain words" in followed.content and f"{web.url('/plain')}" in followed.content
    refused = await _call(tmp_path, "http_fetch", {"url": web.url("/to-metadata")}, _settings())
    assert refused.outcome == "error" and "(169.254.169.254)" in refused.content


async def test_redirect_loops_end_at_max_redirects(tmp_path: Path, web: FakeWeb):
    fetch = LOOPBACK.model_copy(update={"max_redirects": 3})
    before = _paths(web).count("/loop")
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/loop")}, _settings(fetch))
    assert "more than 3 redirects" in result.content
    assert _paths(web).count("/loop") - before == 4


async def test_the_connection_goes_to_the_address_that_was_checked(tmp_path: Path, web: FakeWeb, monkeypatch):
    """The name is resolved once per hop and the request is sent to that address with the name in
    Host: a resolver that would answer differently the second time (DNS rebinding) is never asked."""
    answers = [[ipaddress.ip_address("127.0.0.1")], [ipaddress.ip_address("10.0.0.1")]]
    asked: list[str] = []

    async def rebinding_resolver(host: str, port: int) -> list[Any]:
        asked.append(host)
        return answers[len(asked) - 1]

    monkeypatch.setattr(net, "resolve", rebinding_resolver)
    url = f"http://intranet.example.test:{web.port}/plain"
    result = await _call(tmp_path, "http_fetch", {"url": url}, _settings())
    assert result.ok, result.content
    assert asked == ["intranet.example.test"]
    assert web.requests[-1]["host"] == f"intranet.example.test:{web.port}"


async def test_a_name_with_any_forbidden_address_is_refused(tmp_path: Path, web: FakeWeb, monkeypatch):
    async def mixed(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("169.254.169.254")]

    monkeypatch.setattr(net, "resolve", mixed)
    result = await _call(tmp_path, "http_fetch", {"url": f"http://two.example.test:{web.port}/"}, _settings())
    assert "(169.254.169.254)" in result.content


async def test_the_domain_allow_list_is_enforced(tmp_path: Path, web: FakeWeb):
    fetch = LOOPBACK.model_copy(update={"allowed_domains": ["example.org"]})
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/plain")}, _settings(fetch))
    assert "'127.0.0.1' is not in the allowed domains" in result.content


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("gopher://127.0.0.1/", "only http and https"),
        ("http://user:pw@127.0.0.1/", "credentials"),
        ("http://[::1", "not a valid URL"),
    ],
)
async def test_other_schemes_and_credentials_are_refused(tmp_path: Path, url: str, words: str):
    result = await _call(tmp_path, "http_fetch", {"url": url}, _settings())
    assert result.outcome == "error" and words in result.content


# -- limits ---------------------------------------------------------------------------------------


async def test_a_large_body_is_cut_at_max_bytes(tmp_path: Path, web: FakeWeb):
    fetch = LOOPBACK.model_copy(update={"max_bytes": 1000})
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/big")}, _settings(fetch))
    assert result.ok and "(body cut at the size limit)" in result.content
    assert result.content.split("\n\n", 1)[1] == "y" * 1000


async def test_the_answer_is_cut_to_the_output_limit(tmp_path: Path, web: FakeWeb):
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/big")}, _settings(output_limit_bytes=2000))
    assert result.ok and "[... cut at 1800 bytes]" in result.content
    assert len(result.content.encode()) <= 2000


async def test_a_slow_server_ends_at_the_time_limit(tmp_path: Path, web: FakeWeb):
    fetch = LOOPBACK.model_copy(update={"timeout_seconds": 0.5})
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/slow")}, _settings(fetch))
    assert result.outcome == "error" and "did not finish within 0.5 seconds" in result.content


async def test_binary_content_is_not_shown(tmp_path: Path, web: FakeWeb):
    result = await _call(tmp_path, "http_fetch", {"url": web.url("/binary")}, _settings())
    assert "'image/png' is not text" in result.content


# -- page text and search -------------------------------------------------------------------------


async def test_page_text_keeps_the_article_and_drops_the_noise(tmp_path: Path, web: FakeWeb):
    result = await _call(tmp_path, "web_page_text", {"url": web.url("/article")}, _settings())
    assert result.ok and result.tainted, result.content
    assert "hold hands while they sleep" in result.content and "wrap themselves in kelp" in result.content
    for noise in ("SCRIPT-NOISE", "MENU-NOISE", "FOOTER-NOISE"):
        assert noise not in result.content


async def test_page_text_goes_through_the_same_guard(tmp_path: Path, web: FakeWeb):
    result = await _call(tmp_path, "web_page_text", {"url": web.url("/article")}, _settings(FetchToolSettings()))
    assert "may not reach" in result.content


async def test_page_text_of_a_missing_page_is_an_error(tmp_path: Path, web: FakeWeb):
    result = await _call(tmp_path, "web_page_text", {"url": web.url("/nothing")}, _settings())
    assert "HTTP 404" in result.content


async def test_search_asks_searxng_for_json_and_lists_results(tmp_path: Path, web: FakeWeb):
    search = SearchToolSettings(url=web.url(""), max_results=3)
    result = await _call(tmp_path, "web_search", {"query": "sea otters", "language": "en"}, _settings(search=search))
    assert result.ok and result.tainted
    asked = web.requests[-1]
    assert (asked["path"], asked["q"], asked["format"], asked["language"]) == ("/search", "sea otters", "json", "en")
    assert result.content.splitlines()[:3] == ["1. Result 0", "   https://example.org/0", "   snippet 0"]
    assert "3. Result 2" in result.content and "4." not in result.content


async def test_search_failures_and_missing_configuration_are_errors(tmp_path: Path, web: FakeWeb):
    broken = await _call(
        tmp_path, "web_search", {"query": "broken"}, _settings(search=SearchToolSettings(url=web.url("")))
    )
    assert "the search service failed: HTTPStatusError" in broken.content
    unset = await _call(tmp_path, "web_search", {"query": "otters"}, _settings())
    assert "not configured" in unset.content
