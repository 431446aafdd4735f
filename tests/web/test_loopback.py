"""The page in the loopback single-user mode (no key asked for), straight from an engine without
nginx; and no page where the web channel is off."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from assistantctl.engine.settings import ChannelSettings
from engine_process import model, start_engine, stop_engine


def test_on_loopback_without_keys_the_page_needs_no_sign_in(browser: Browser, tmp_path: Path) -> None:
    # Not the default path: the page connects where the spec puts the channel.
    channels = [ChannelSettings(name="web"), ChannelSettings(name="websocket", path="/chat-socket")]
    engine = start_engine(tmp_path / "open", [model("local")], channels=channels)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(engine.url + "/")
        expect(page.locator("#app")).to_be_visible()
        expect(page.locator("#signin")).to_be_hidden()
        page.fill("#input", "hello without a key")
        page.click("#send")
        expect(page.locator(".msg.assistant .body")).to_contain_text('You said: "hello without a key"')
    finally:
        context.close()
        stop_engine(engine)


def test_without_the_websocket_channel_the_page_says_what_is_missing(browser: Browser, tmp_path: Path) -> None:
    engine = start_engine(tmp_path / "no-socket", [model("local")], channels=[ChannelSettings(name="web")])
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(engine.url + "/")
        expect(page.locator("#status")).to_contain_text("channels.websocket")
    finally:
        context.close()
        stop_engine(engine)


def test_without_the_web_channel_there_is_no_page(tmp_path: Path) -> None:
    engine = start_engine(tmp_path / "api-only", [model("local")], channels=[ChannelSettings(name="websocket")])
    try:
        assert httpx.get(engine.url + "/", timeout=10).status_code == 404
        assert httpx.get(engine.url + "/web/app.js", timeout=10).status_code == 404
    finally:
        stop_engine(engine)
