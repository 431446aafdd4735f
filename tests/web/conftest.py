"""The web page's tests: Debian's Chromium driven by Playwright against a real local apply
(nginx + supervisor + the engine on free ports) whose default model is the echo upstream.

Screenshots go to test-artifacts/web/ at the repository's top (ignored by git)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from echo_upstream import Echo, start_echo
from playwright.sync_api import Browser, Page, sync_playwright

from cli_helpers import REPO, Deployment, applied

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = REPO / "test-artifacts" / "web"
# Short, so that the page's timeout test does not wait long.
REQUEST_SECONDS = 5


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    echo, server, thread = start_echo()
    yield echo
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, echo: Echo) -> Iterator[Deployment]:
    """Keys required everywhere (anonymous off), the echo model by default, the builtin one to pick."""
    deployment = Deployment(tmp_path_factory.mktemp("web"))
    data = deployment.data
    data["models"] = {
        "default": "echo",
        "fallback": [],
        "providers": {
            "echo": {"provider": "openai", "model": "echo-1", "api_base": f"{echo.url}/v1"},
            "local": {"provider": "builtin"},
        },
    }
    data["security"]["anonymous"] = "off"
    data["limits"]["timeouts"] = {"request_seconds": REQUEST_SECONDS}
    deployment.rewrite(data)
    with applied(deployment):
        yield deployment


@pytest.fixture(scope="module")
def api_key(deployment: Deployment) -> str:
    created = deployment.run("keys", "create", "wendy", "--scope", "chat", "--scope", "history", "--name", "web")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


# Module scope, like the rest: Playwright's sync API runs an event loop in this thread while it is
# open, and the next module on this worker may be asyncio tests that need the thread free.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, echo: Echo, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context; its screenshot is saved as <test name>.png whatever the outcome.
    `page.dialogs` and `page.console_errors` collect what the page raised."""
    echo.reset()
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))  # type: ignore[attr-defined]
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
