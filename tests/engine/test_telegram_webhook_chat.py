"""Telegram by webhook gets what polling gets: /start, /reset and /model answered by the engine,
"typing..." while the model works, and still one reply per update (a redelivery is only
acknowledged), against the real engine and the fake Bot API on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from test_telegram_polling import SlowModel, history_rows, replies, update, wait_until

from assistantctl.engine.channels.telegram_commands import RESET_TEXT, START_TEXT
from assistantctl.engine.settings import ChannelSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_platforms import FakePlatforms

TOKEN, HOOK = "515151:FAKE-WEBHOOK-CHAT-TOKEN", "FAKE-WEBHOOK-CHAT-SECRET"
SECRETS = {"channels.telegram.bot_token": TOKEN, "channels.telegram.webhook_secret": HOOK}


@pytest.fixture(scope="module")
def slow() -> Iterator[SlowModel]:
    running = SlowModel()
    yield running
    running.server.should_exit = True
    running.thread.join(5)


@pytest.fixture
def fake(platforms: FakePlatforms) -> FakePlatforms:
    platforms.reset()
    return platforms


@pytest.fixture(scope="module")
def engine(module_dir, platforms: FakePlatforms, slow: SlowModel) -> Iterator[RunningEngine]:
    channel = ChannelSettings(
        name="telegram",
        path="/webhooks/telegram",
        secrets={"bot_token": "channels.telegram.bot_token", "webhook_secret": "channels.telegram.webhook_secret"},
        api_base=platforms.url,
    )
    models = [model("slow", "openai", model="slow", api_base=f"http://127.0.0.1:{slow.port}/v1"), model("other")]
    running = start_engine(module_dir / "tg-webhook", models, secrets=SECRETS, channels=[channel])
    yield running
    stop_engine(running)


def post(engine: RunningEngine, body: dict) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": HOOK}
    return httpx.post(f"{engine.url}/webhooks/telegram", json=body, headers=headers, timeout=10).status_code


def test_commands_by_webhook(engine, fake) -> None:
    chat = 6100
    script = ["/start", "one", "/reset", "two", "/model other", "three"]
    for i, text in enumerate(script):
        assert post(engine, update(700 + i, chat, text)) == 200
        wait_until(lambda n=i + 1: len(replies(fake)) >= n, what=f"reply to {text}")
    texts = [r["text"] for r in replies(fake)]
    assert texts[:4] == [START_TEXT, "echo: one", RESET_TEXT, "echo: two"]
    assert texts[4] == "This chat now uses other." and not texts[5].startswith("echo:")
    conversations = [c for c, role in history_rows(engine, f"telegram:{chat}") if role == "user"]
    assert len(conversations) == 3 and conversations[0] != conversations[1] == conversations[2]


def test_typing_by_webhook_and_a_redelivery_is_not_answered_again(engine, fake) -> None:
    slow_update = update(800, 6200, "wait 5: ponder")
    assert post(engine, slow_update) == 200
    assert post(engine, slow_update) == 200  # Telegram retrying while the model works
    wait_until(lambda: len(replies(fake)) >= 1, what="the reply")
    actions = [c["body"] for c in fake.bot.of("sendChatAction")]
    assert len(actions) >= 2 and all(a == {"chat_id": 6200, "action": "typing"} for a in actions)
    assert post(engine, slow_update) == 200
    time.sleep(0.5)
    assert replies(fake) == [{"chat_id": 6200, "text": "echo: wait 5: ponder"}]
