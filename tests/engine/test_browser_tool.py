"""The browser tool against a page this test serves on loopback, with the real Chromium (in bubblewrap)
and Playwright: a form filled and submitted, its result read, a PNG screenshot in the user's
workspace, and the allow-list holding for sub-resources, navigations and redirects."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fake_tool_models import ToolUpstream

from assistantctl.engine.settings import ApprovalSettings, BrowserToolSettings, MachineToolSettings, ToolsSettings
from assistantctl.engine.tools import ToolResult, call_tool, load_registry
from assistantctl.engine.tools.builtin import browser_session
from assistantctl.engine.tools.builtin.browser_session import POOL
from assistantctl.engine.tools.sandbox import workspace_for
from engine_process import TEST_JWT_KEY, TEST_JWT_SECRET, as_user, model, start_engine, stop_engine
from fake_loop_model import plan
from test_tools_context import fake_context

FORM = b"""<!doctype html><html><head><title>Greeter</title></head><body>
<form action="/greet" method="get"><input id="name" name="name"><button id="go" type="submit">Go</button></form>
</body></html>"""


class _Site(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        path = urlsplit(self.path)
        if path.path == "/greet":
            name = parse_qs(path.query).get("name", ["?"])[0]
            self._html(f"<html><body><p id='result'>Hello, {name}!</p></body></html>".encode())
        elif path.path == "/with-foreign-image":
            # localhost is this very server, but not a name on the allow-list
            port = self.server.server_address[1]
            self._html(f"<html><body><p>text</p><img src='http://localhost:{port}/pixel.png'></body></html>".encode())
        elif path.path == "/away":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/greet?name=leaked")
            self.end_headers()
        elif path.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/greet?name=moved")
            self.end_headers()
        else:
            self._html(FORM)

    def _html(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
async def browse(tmp_path: Path) -> AsyncIterator:
    # The page is on loopback: this spec allows that host and network explicitly.
    settings = ToolsSettings(
        enabled=["browser"],
        step_timeout_seconds=60,
        machine=MachineToolSettings(workspaces_dir=str(tmp_path / "workspaces")),
        browser=BrowserToolSettings(allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.0/8"]),
    )
    registry = load_registry(settings)
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    async def call(**args: object) -> ToolResult:
        return await call_tool(registry, "browser", json.dumps(args), fake_context(data_dir, settings=settings))

    yield call
    await POOL.close_all()


async def test_fills_a_form_reads_the_result_and_saves_a_png(browse, site: str, tmp_path: Path):
    opened = await browse(action="open", url=f"{site}/form")
    assert opened.ok, opened.content
    assert "Greeter" in opened.content and opened.tainted
    assert (await browse(action="fill", selector="#name", text="Ada")).ok
    clicked = await browse(action="click", selector="#go")
    assert clicked.ok, clicked.content
    read = await browse(action="read", selector="#result")
    assert read.ok and "Hello, Ada!" in read.content, read.content

    shot = await browse(action="screenshot")
    assert shot.ok, shot.content
    name = shot.content.split(" as ")[1].split(" ")[0]
    png = workspace_for(tmp_path / "workspaces", "alice") / name
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


async def test_a_resource_from_a_host_off_the_list_is_aborted_and_reported(browse, site: str):
    opened = await browse(action="open", url=f"{site}/with-foreign-image")
    assert opened.ok, opened.content
    assert "/pixel.png ('localhost' is not in the browser's allowed domains)" in opened.content
    assert "/pixel.png" not in _Site.hits


async def test_opening_a_domain_off_the_list_is_refused(browse, site: str):
    port = urlsplit(site).port
    refused = await browse(action="open", url=f"http://localhost:{port}/form")
    assert refused.outcome == "error"
    assert "'localhost' is not in the browser's allowed domains" in refused.content


async def test_a_redirect_to_a_host_off_the_list_is_refused(browse, site: str):
    result = await browse(action="open", url=f"{site}/away")
    assert result.outcome == "error", result.content
    assert "name=leaked ('localhost' is not in the browser's allowed domains)" in result.content
    assert "/greet?name=leaked" not in _Site.hits


async def test_a_redirect_within_the_list_is_followed_to_its_real_address(browse, site: str):
    opened = await browse(action="open", url=f"{site}/moved")
    assert opened.ok, opened.content
    assert "/greet?name=moved" in opened.content
    assert "Hello, moved!" in (await browse(action="read")).content


async def test_a_private_address_is_refused_unless_its_network_is_allowed(tmp_path: Path, site: str):
    settings = ToolsSettings(
        enabled=["browser"],
        machine=MachineToolSettings(workspaces_dir=str(tmp_path / "workspaces")),
        browser=BrowserToolSettings(allowed_domains=["127.0.0.1"]),
    )
    result = await call_tool(
        load_registry(settings), "browser", json.dumps({"action": "open", "url": site}),
        fake_context(tmp_path, settings=settings),
    )  # fmt: skip
    assert result.outcome == "error"
    assert "address the browser may not reach" in result.content


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


async def test_chromium_runs_in_its_own_namespaces_without_the_engines_files(browse, site: str, tmp_path: Path):
    assert (await browse(action="open", url=f"{site}/form")).ok
    chromiums = []
    for pid in _descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/exe").resolve().name == "chromium":
                chromiums.append(pid)
        except OSError:
            continue
    assert chromiums
    for pid in chromiums:
        for kind in ("net", "mnt", "pid", "user"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
        assert uid != 0  # setpriv dropped root (when the engine has it) before bwrap
        root = Path(f"/proc/{pid}/root")
        assert not (root / str(tmp_path).lstrip("/")).exists()  # data_dir and the workspaces are not there
        assert not (root / "etc/shadow").exists()


async def test_an_idle_session_is_closed_and_the_browser_with_it(tmp_path: Path, site: str, monkeypatch):
    monkeypatch.setattr(browser_session, "REAP_EVERY_SECONDS", 0.1)
    settings = ToolsSettings(
        enabled=["browser"],
        machine=MachineToolSettings(workspaces_dir=str(tmp_path / "workspaces")),
        browser=BrowserToolSettings(allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.0/8"], idle_seconds=0.5),
    )
    opened = await call_tool(
        load_registry(settings), "browser", json.dumps({"action": "open", "url": site}),
        fake_context(tmp_path, settings=settings),
    )  # fmt: skip
    assert opened.ok, opened.content
    assert POOL.users == ["alice"] and POOL.running
    for _ in range(100):
        if not POOL.running:
            break
        await asyncio.sleep(0.1)
    assert POOL.users == [] and not POOL.running


async def test_a_screenshot_does_not_follow_a_link_planted_in_the_workspace(browse, site: str, tmp_path: Path):
    # sandboxed code writes the workspace: a `screenshots` link to elsewhere must not carry the PNG out
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace_for(tmp_path / "workspaces", "alice") / "screenshots").symlink_to(outside)
    assert (await browse(action="open", url=f"{site}/form")).ok
    shot = await browse(action="screenshot")
    assert shot.outcome == "error", shot.content
    assert "screenshots" in shot.content
    assert list(outside.iterdir()) == []


# -- through a real engine -------------------------------------------------------------------------


def test_the_model_browses_and_the_owner_alone_downloads_the_screenshot(
    tmp_path: Path, site: str, loop_model: ToolUpstream
) -> None:
    # The browser's answers are text from the network, so under the default policy every later
    # machine-tool call of the request waits for the user's yes; this test is about the browser and
    # the download, not approval, which it turns off.
    tools = ToolsSettings(
        enabled=["browser"],
        step_timeout_seconds=60,
        machine=MachineToolSettings(workspaces_dir=str(tmp_path / "workspaces")),
        browser=BrowserToolSettings(allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.0/8"]),
        approval=ApprovalSettings(machine="never"),
    )
    engine = start_engine(
        tmp_path / "engine",
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets={"k": "sk-test", TEST_JWT_SECRET: TEST_JWT_KEY},
        tools=tools,
    )
    try:
        steps = [
            [("browser", {"action": "open", "url": f"{site}/form"})],
            [("browser", {"action": "fill", "selector": "#name", "text": "Grace"})],
            [("browser", {"action": "click", "selector": "#go"})],
            [("browser", {"action": "read", "selector": "#result"})],
            [("browser", {"action": "screenshot"})],
        ]
        response = httpx.post(
            f"{engine.url}/api/v1/chat", json={"message": plan(*steps)}, headers=as_user("alice"), timeout=90
        )
        assert response.status_code == 200, response.text
        reply = response.json()["reply"]
        assert "Hello, Grace!" in reply, reply
        name = reply.split("as screenshots/")[1].split(" ")[0]

        own = httpx.get(f"{engine.url}/api/v1/workspace/screenshots/{name}", headers=as_user("alice"))
        assert own.status_code == 200 and own.headers["content-type"] == "image/png"
        assert own.content[:8] == b"\x89PNG\r\n\x1a\n" and len(own.content) > 1000
        other = httpx.get(f"{engine.url}/api/v1/workspace/screenshots/{name}", headers=as_user("bob"))
        assert other.status_code == 404
        guessed = httpx.get(f"{engine.url}/api/v1/workspace/screenshots/..%2Fsecret.png", headers=as_user("alice"))
        assert guessed.status_code == 404
    finally:
        stop_engine(engine)
