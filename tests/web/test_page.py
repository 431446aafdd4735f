"""The web chat page in Chromium against a real local apply: sign in, streamed replies, stop,
reconnect after the engine is killed, older conversations, hostile markup, tools, timeouts, a phone.

Each test's screenshot is saved under test-artifacts/web/ (see conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from echo_upstream import Echo
from playwright.sync_api import Page, expect

from cli_helpers import Deployment
from conftest import REQUEST_SECONDS, artifact

LONG = " ".join(f"word{i}" for i in range(30))


def sign_in(page: Page, deployment: Deployment, key: str) -> None:
    page.goto(deployment.url + "/")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()


def send(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.click("#send")


def last_reply(page: Page):
    return page.locator(".msg.assistant").last


def wait_until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sign_in_with_a_key_then_the_reply_streams_in(page: Page, deployment: Deployment, api_key: str, echo: Echo):
    page.goto(deployment.url + "/")
    expect(page.locator("#signin")).to_be_visible()  # anonymous is off: nothing works without a key
    page.fill("#key", "sk-ast-not-a-key")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_have_text("This API key was refused.")
    sign_in(page, deployment, api_key)
    echo.delay = 0.08  # the whole reply well within REQUEST_SECONDS
    send(page, "Hello **web** world, " + LONG + "\n```py\nprint('<b>x</b>')\n```")
    reply = last_reply(page)
    expect(reply.locator(".body")).to_contain_text("Hello web world")  # the first words, Markdown rendered
    assert "word29" not in reply.inner_text() and "streaming" in (reply.get_attribute("class") or "")
    page.screenshot(path=str(artifact("streaming.png")))
    expect(reply.locator(".body")).to_contain_text("word29", timeout=15_000)
    expect(reply).not_to_have_class("msg assistant streaming")
    assert reply.locator("strong").inner_text() == "web"
    assert reply.locator("pre code[data-lang=py]").inner_text() == "print('<b>x</b>')"
    assert echo.calls == 1 and echo.streams_finished == 1


def test_the_page_has_a_strict_csp_and_cache_headers_with_and_without_nginx(deployment: Deployment, api_key: str):
    engine = f"http://127.0.0.1:{deployment.data['deploy']['ports']['engine']}"
    via_nginx, direct = httpx.get(deployment.url + "/", timeout=10), httpx.get(engine + "/", timeout=10)
    for response in (via_nginx, direct):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert (
            response.headers["cache-control"] == "no-cache" and "nosniff" in response.headers["x-content-type-options"]
        )
    assert via_nginx.headers["content-security-policy"] == direct.headers["content-security-policy"]
    assert via_nginx.text == direct.text and '<script src="/web/app.' in direct.text
    again = httpx.get(deployment.url + "/", headers={"If-None-Match": via_nginx.headers["etag"]}, timeout=10)
    assert again.status_code == 304
    script = direct.text.split('<script src="', 1)[1].split('"', 1)[0]
    asset = httpx.get(deployment.url + script, timeout=10)
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert asset.headers["content-security-policy"] == direct.headers["content-security-policy"]
    assert httpx.get(deployment.url + "/web/app.000000000000.js", timeout=10).status_code == 404


def test_stop_cancels_the_upstream_call(page: Page, deployment: Deployment, api_key: str, echo: Echo):
    sign_in(page, deployment, api_key)
    echo.delay = 0.2
    send(page, "Stop me " + LONG)
    reply = last_reply(page)
    expect(reply.locator(".body")).to_contain_text("Stop me")
    page.click("#stop")
    expect(reply.locator(".note")).to_have_text("Stopped.")
    wait_until(lambda: echo.streams_closed == 1, 3, "the upstream to see its client go")
    assert echo.streams_finished == 0 and "word29" not in reply.inner_text()
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()


def _engine_pid(deployment: Deployment) -> int:
    conf = deployment.root / "current" / "supervisor" / "supervisord.conf"
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "pid", "engine"]
    return int(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)


def test_the_page_reconnects_after_the_engine_is_killed_and_the_reply_finishes(
    page: Page, deployment: Deployment, api_key: str, echo: Echo
):
    sign_in(page, deployment, api_key)
    echo.delay = 0.1
    words = " ".join(f"kill{i}" for i in range(20))
    send(page, words)
    reply = last_reply(page)
    expect(reply.locator(".body")).to_contain_text("kill2")
    parent = _engine_pid(deployment)
    os.killpg(os.getpgid(parent), signal.SIGKILL)  # the engine and its workers, mid-reply
    expect(page.locator("#status")).to_have_text("Reconnecting\u2026")
    page.screenshot(path=str(artifact("reconnecting.png")))
    # supervisor starts the engine again; the page re-sends the id, and the new engine takes the
    # dead worker's claim over once it has been silent for 10 s, then answers once.
    expect(reply.locator(".body")).to_have_text(words, timeout=60_000)
    expect(page.locator("#status")).to_have_text("")
    assert _engine_pid(deployment) != parent and echo.calls == 2


def test_an_older_conversation_opens_and_one_can_be_deleted(page: Page, deployment: Deployment, api_key: str):
    sign_in(page, deployment, api_key)
    send(page, "first topic alpha")
    expect(last_reply(page).locator(".body")).to_have_text("first topic alpha")
    page.click("#new")
    expect(page.locator(".msg")).to_have_count(0)
    send(page, "second topic beta")
    expect(last_reply(page).locator(".body")).to_have_text("second topic beta")
    page.reload()  # the key stays for the tab's session
    expect(page.locator("#app")).to_be_visible()
    page.locator("#conversations .open", has_text="first topic alpha").click()
    expect(page.locator(".msg.user")).to_have_text(["first topic alpha"])
    expect(page.locator(".msg.assistant")).to_have_text(["first topic alpha"])
    send(page, "a follow-up")  # goes on in the opened conversation
    expect(last_reply(page).locator(".body")).to_have_text("a follow-up")
    page.locator("#conversations li", has_text="second topic beta").locator(".delete").click()
    expect(page.locator("#conversations .open", has_text="second topic beta")).to_have_count(0)
    expect(page.locator("#conversations .open", has_text="first topic alpha")).to_have_count(1)
    page.locator("#conversations .open", has_text="first topic alpha").click()
    expect(page.locator(".msg.user")).to_have_text(["first topic alpha", "a follow-up"])


HOSTILE = (
    '<img src=x onerror="window.__pwned=1;alert(1)"> <script>window.__pwned=2;alert(2)</script> '
    "[click](javascript:window.__pwned=3) <a href=javascript:alert(4)>a</a> and https://example.com/x"
)


def test_hostile_markup_in_a_message_and_its_reply_never_runs(page: Page, deployment: Deployment, api_key: str):
    sign_in(page, deployment, api_key)
    send(page, HOSTILE)
    reply = last_reply(page)
    expect(reply.locator(".body")).to_contain_text("example.com/x")
    page.reload()  # and once more, rendered from the stored history
    page.locator("#conversations .open").first.click()
    expect(page.locator(".msg")).to_have_count(2)
    for message in (page.locator(".msg.user"), page.locator(".msg.assistant")):
        expect(message).to_contain_text("<script>window.__pwned=2;alert(2)</script>")
        expect(message).to_contain_text('<img src=x onerror="window.__pwned=1;alert(1)">')
    time.sleep(0.5)  # an image error or a script would have run by now
    assert page.evaluate("window.__pwned") is None and page.dialogs == []  # type: ignore[attr-defined]
    assert page.locator("#messages img, #messages script, #messages [onerror]").count() == 0
    links = page.locator(".msg.assistant a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.com/x"
    assert "noopener" in (links.get_attribute("rel") or "")
    refused = [e for e in page.console_errors if "Content Security Policy" in e]  # type: ignore[attr-defined]
    assert refused == []  # not even a refusal by the CSP: nothing tried to run


def test_tool_calls_show_as_they_run(page: Page, deployment: Deployment, api_key: str):
    sign_in(page, deployment, api_key)
    page.select_option("#model", "local")
    send(page, "what is 6*7?")
    reply = last_reply(page)
    expect(reply.locator(".tool")).to_have_text("\u2713 ran calculator")
    expect(reply.locator(".body")).to_contain_text("42")


def test_a_reply_that_times_out_says_so(page: Page, deployment: Deployment, api_key: str, echo: Echo):
    sign_in(page, deployment, api_key)
    echo.hang = True
    send(page, "are you there?")
    note = last_reply(page).locator(".note")
    expect(note).to_contain_text("The reply timed out", timeout=(REQUEST_SECONDS + 15) * 1000)
    expect(page.locator("#send")).to_be_visible()


def test_a_phone_sized_dark_page_works(browser, deployment: Deployment, api_key: str, echo: Echo):
    echo.reset()
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, color_scheme="dark"
    )
    page = context.new_page()
    try:
        sign_in(page, deployment, api_key)
        expect(page.locator("#menu")).to_be_visible()
        assert not page.locator("#sidebar").is_visible() or page.locator("#sidebar").bounding_box()["x"] < -100
        send(page, "hello from a phone")
        expect(last_reply(page).locator(".body")).to_have_text("hello from a phone")
        expect(page.locator("#title")).to_have_text("hello from a phone")  # the new conversation's title
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 23, 27)"  # the dark palette
        page.screenshot(path=str(artifact("phone-dark.png")))
        page.click("#menu")
        expect(page.locator("#conversations .open", has_text="hello from a phone")).to_be_in_viewport()
        page.wait_for_timeout(400)  # the drawer's slide-in, for the screenshot
        page.screenshot(path=str(artifact("phone-menu.png")))
    finally:
        context.close()
