"""Webhook messages go through the same admission as the chat API: security.allowed_users, the rate
limit and the model chain (with its failures); a channel without its secrets stops the engine at
start; and the webhook routes stay out of the settings-independent OpenAPI document."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assistantctl.engine.api import openapi
from assistantctl.engine.app import routes
from assistantctl.engine.channels.delivery import FAILURE_TEXT
from assistantctl.engine.settings import ChannelSettings, RateLimitSettings, SecuritySettings
from engine_process import RunningEngine, StartEngine, model, start_engine, stop_engine
from fake_platforms import FakePlatforms

BOT_TOKEN, TG_SECRET = "42:FAKE-ADMISSION-BOT", "FAKE-ADMISSION-SECRET"
WA_APP_SECRET = "FAKE-ADMISSION-APP-SECRET"
ALLOWED = ["telegram:2001", "telegram:2002", "telegram:2003"]
SECRETS = {"tg.bot": BOT_TOKEN, "tg.hook": TG_SECRET, "wa.access": "a", "wa.verify": "v", "wa.app": WA_APP_SECRET}


def telegram(api_base: str) -> ChannelSettings:
    secrets = {"bot_token": "tg.bot", "webhook_secret": "tg.hook"}
    return ChannelSettings(name="telegram", path="/hooks/tg", secrets=secrets, api_base=api_base)


def whatsapp(api_base: str) -> ChannelSettings:
    """A channel whose model is down."""
    secrets = {"access_token": "wa.access", "verify_token": "wa.verify", "app_secret": "wa.app"}
    return ChannelSettings(
        name="whatsapp",
        path="/hooks/wa",
        model="down",
        secrets=secrets,
        options={"phone_number_id": "1"},
        api_base=api_base,
    )


@pytest.fixture(scope="module")
def engine(module_dir: Path, platforms: FakePlatforms) -> Iterator[RunningEngine]:
    """One answer per minute per user; only the listed users may chat; the whatsapp channel's model is down."""
    running = start_engine(
        module_dir / "admission",
        [model("local"), model("down", provider="openai", api_base="http://127.0.0.1:9", connect_timeout_seconds=1)],
        secrets=SECRETS,
        channels=[telegram(platforms.url), whatsapp(platforms.url)],
        rate_limit=RateLimitSettings(requests_per_minute=1, burst=1, key="ip"),
        security=SecuritySettings(
            allowed_users=["telegram:2001", "telegram:2002", "telegram:2003", "whatsapp:15550002004"]
        ),
        retries=0,
    )
    yield running
    stop_engine(running)


def post(engine: RunningEngine, update_id: int, user_id: int) -> int:
    message = {"message_id": 1, "from": {"id": user_id, "is_bot": False}, "chat": {"id": user_id}, "text": "hi"}
    body = json.dumps({"update_id": update_id, "message": message})
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Type": "application/json"}
    return httpx.post(engine.url + "/hooks/tg", content=body, headers=headers, timeout=10).status_code


def stored(engine: RunningEngine, user: str) -> int:
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "history.sqlite3")) as db:
        return db.execute("SELECT COUNT(*) FROM messages WHERE user = ?", (user,)).fetchone()[0]


def test_security_allowed_users_apply_to_the_prefixed_platform_user(engine, platforms) -> None:
    platforms.reset()
    assert post(engine, 1, 2999) == 200  # not in security.allowed_users: acknowledged, never answered
    assert post(engine, 2, 2001) == 200
    (reply,) = platforms.wait_for("telegram", 1)
    assert reply["body"]["chat_id"] == 2001
    time.sleep(0.2)
    assert stored(engine, "telegram:2999") == 0 and len(platforms.sent) == 1


def test_the_rate_limit_is_per_platform_user_even_when_keyed_by_ip(engine, platforms) -> None:
    platforms.reset()
    assert post(engine, 10, 2002) == 200
    assert post(engine, 11, 2002) == 200  # a new message, over the limit: dropped
    assert post(engine, 12, 2003) == 200  # someone else behind the same platform IP: answered
    replies = platforms.wait_for("telegram", 2)
    time.sleep(0.3)
    assert (
        sorted(r["body"]["chat_id"] for r in platforms.sent)
        == [2002, 2003]
        == sorted(r["body"]["chat_id"] for r in replies)
    )
    assert stored(engine, "telegram:2002") == 2
    assert engine.metric("assistant_rate_limited_total", route="/hooks/tg") == 1


def test_a_failed_model_call_sends_an_apology_stores_nothing_and_releases_the_claim(engine, platforms) -> None:
    platforms.reset()
    message = {"from": "15550002004", "id": "wamid.DOWN", "type": "text", "text": {"body": "hi"}}
    value = {"metadata": {"phone_number_id": "1"}, "messages": [message]}
    raw = json.dumps({"entry": [{"changes": [{"value": value}]}]}).encode()
    signature = "sha256=" + hmac.new(WA_APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature, "Content-Type": "application/json"}
    assert httpx.post(engine.url + "/hooks/wa", content=raw, headers=headers, timeout=10).status_code == 200
    (reply,) = platforms.wait_for("whatsapp", 1)
    assert reply["body"]["to"] == "15550002004" and reply["body"]["text"]["body"] == FAILURE_TEXT
    user = "whatsapp:15550002004"
    assert stored(engine, user) == 0
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "history.sqlite3")) as db:
        claims = db.execute("SELECT COUNT(*) FROM client_messages WHERE user = ?", (user,)).fetchone()[0]
    assert claims == 0  # released: a redelivery would be answered


def test_a_channel_without_its_secrets_stops_the_engine_at_start(engine_factory: StartEngine) -> None:
    with pytest.raises(RuntimeError, match="lacks secret webhook_secret"):
        engine_factory([model("local")], secrets={"tg.bot": BOT_TOKEN}, channels=[telegram("http://127.0.0.1:9")])


def test_webhook_routes_are_served_but_left_out_of_the_openapi_document() -> None:
    table = routes("/metrics", "/ws", {"/webhooks/telegram": ("POST",), "/webhooks/wecom": ("GET", "POST")})
    assert {"/webhooks/telegram", "/webhooks/wecom"} <= {getattr(r, "path", None) for r in table}
    assert openapi.document(table) == openapi.document(routes("/metrics", "/ws"))
