"""Telegram by webhook gets what polling gets: /start, /reset and /model answered by the engine,
"typing..." while the model works, and still one reply per update (a redelivery is only
acknowledged), against the real engine and the fake Bot API on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from assistantctl.engine.channels.telegram_commands import RESET_TEXT, START_TEXT
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_platforms import FakePlatforms
from telegram_helpers import (
    WEBHOOK_SECRETS,
    SlowModel,
    history_rows,
    post,
    replies,
    update,
    wait_until,
    webhook_channel,
)


@pytest.fixture(scope="module")
def engine(module_dir, platforms: FakePlatforms, slow_model: SlowModel) -> Iterator[RunningEngine]:
    models = [model("slow", "openai", model="slow", api_base=f"http://127.0.0.1:{slow_model.port}/v1"), model("other")]
    channels = [webhook_channel(platforms.url)]
    running = start_engine(module_dir / "tg-webhook", models, secrets=WEBHOOK_SECRETS, channels=channels)
    yield running
    stop_engine(running)


def test_commands_by_webhook(engine, fresh_platforms) -> None:
    chat = 6100
    script = ["/start", "one", "/reset", "two", "/model other", "three"]
    for i, text in enumerate(script):
        assert post(engine, update(700 + i, chat, text)) == 200
        wait_until(lambda n=i + 1: len(replies(fresh_platforms)) >= n, what=f"reply to {text}")
    texts = [r["text"] for r in replies(fresh_platforms)]
    assert texts[:4] == [START_TEXT, "echo: one", RESET_TEXT, "echo: two"]
    assert texts[4] == "This chat now uses other." and not texts[5].startswith("echo:")
    conversations = [c for c, role in history_rows(engine, f"telegram:{chat}") if role == "user"]
    assert len(conversations) == 3 and conversations[0] != conversations[1] == conversations[2]


def test_typing_by_webhook_and_a_redelivery_is_not_answered_again(engine, fresh_platforms) -> None:
    slow_update = update(800, 6200, "wait 5: ponder")
    assert post(engine, slow_update) == 200
    assert post(engine, slow_update) == 200  # Telegram retrying while the model works
    wait_until(lambda: len(replies(fresh_platforms)) >= 1, what="the reply")
    actions = [c["body"] for c in fresh_platforms.bot.of("sendChatAction")]
    assert len(actions) >= 2 and all(a == {"chat_id": 6200, "action": "typing"} for a in actions)
    assert post(engine, slow_update) == 200
    time.sleep(0.5)
    assert replies(fresh_platforms) == [{"chat_id": 6200, "text": "echo: wait 5: ponder"}]
