"""Telegram's webhook registration, from the controller, against a fake Bot API on loopback.

`plan` shows a line when Telegram's registered webhook differs from the spec (getWebhookInfo) and
exits 2 with --detailed-exitcode; `apply` registers it with setWebhook (the spec's public URL,
the webhook secret as secret_token, the update types the engine answers) and a second plan is
clean; polling mode deletes a registered webhook. A webhook with no public URL is not registered
and plan warns about it. No message ever shows the bot token.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from assistantctl.engine.settings import TELEGRAM_ALLOWED_UPDATES
from assistantctl.schema.checks import exposure_warnings
from assistantctl.schema.loader import parse_spec
from assistantctl.telegram_webhook import TelegramError, drift, register, sync, wanted
from cli_helpers import Deployment, applied

sys.path.insert(0, str(Path(__file__).parent / "engine"))  # the fake Bot API, shared with tests/engine
from fake_platforms import FakePlatforms, start_platforms  # noqa: E402

TOKEN = "777001:FAKE-REGISTRATION-TOKEN"
HOOK_SECRET = "FAKE-REGISTRATION-HOOK-SECRET"
PUBLIC = "https://bot.example.com/webhooks/telegram"
ENV = {"TG_TOKEN": TOKEN, "TG_HOOK": HOOK_SECRET}
SECRETS = {"channels.telegram.bot_token": TOKEN, "channels.telegram.webhook_secret": HOOK_SECRET}


@pytest.fixture(scope="module")
def platforms() -> Iterator[FakePlatforms]:
    fake, server, thread = start_platforms()
    yield fake
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def fake(platforms: FakePlatforms) -> FakePlatforms:
    platforms.reset()
    return platforms


def telegram(api_base: str, **extra) -> dict:
    return {
        "enabled": True,
        "bot_token": "${env:TG_TOKEN}",
        "webhook_secret": "${env:TG_HOOK}",
        "public_url": PUBLIC,
        "api_base": api_base,
        **extra,
    }


def spec_with(api_base: str, **extra):
    data = {"version": 2, "models": {"default": "local", "providers": {"local": {"provider": "builtin"}}}}
    data["channels"] = {"telegram": telegram(api_base, **extra)}
    return parse_spec(yaml.safe_dump(data, sort_keys=False))


def test_setwebhook_registers_url_secret_and_updates_then_nothing_differs(fake) -> None:
    want = wanted(spec_with(fake.url), SECRETS)
    assert drift(want) == f"+ telegram webhook {PUBLIC} (allowed_updates: message)"
    assert register(want) == f"telegram webhook set to {PUBLIC}"
    assert fake.bot.webhook == {"url": PUBLIC, "secret_token": HOOK_SECRET, "allowed_updates": ["message"]}
    assert drift(want) is None
    moved = wanted(spec_with(fake.url, public_url="https://other.example.com/tg"), SECRETS)
    assert drift(moved) == f"~ telegram webhook {PUBLIC} -> https://other.example.com/tg"
    fake.bot.webhook["allowed_updates"] = ["message", "edited_message"]
    assert drift(want) == "~ telegram webhook allowed_updates [message, edited_message] -> [message]"
    assert all(call["path"].startswith(f"/bot{TOKEN}/") for call in fake.bot.calls)


def test_apply_sends_a_rotated_webhook_secret_though_nothing_else_differs(fake) -> None:
    # getWebhookInfo never tells the secret_token: after a rotation only setWebhook can make
    # Telegram send the new one, or every update would be refused by the engines.
    sync(wanted(spec_with(fake.url), SECRETS))
    rotated = {**SECRETS, "channels.telegram.webhook_secret": "ROTATED-HOOK-SECRET"}
    want = wanted(spec_with(fake.url), rotated)
    assert drift(want) is None  # nothing plan can see
    assert sync(want) is None  # nothing to report either
    assert fake.bot.webhook["secret_token"] == "ROTATED-HOOK-SECRET"


def test_polling_mode_deletes_a_registered_webhook(fake) -> None:
    fake.bot.webhook = {"url": PUBLIC}
    want = wanted(spec_with(fake.url, mode="polling", webhook_secret=None), SECRETS)
    assert want is not None and want.url is None
    assert drift(want) == f"- telegram webhook {PUBLIC} (polling mode: apply deletes it)"
    assert register(want) == "telegram webhook deleted (polling mode)"
    assert fake.bot.webhook == {} and drift(want) is None


def test_bot_api_errors_never_show_the_token(fake) -> None:
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(TelegramError) as unreachable:
        drift(wanted(spec_with(closed), SECRETS))
    with pytest.raises(TelegramError) as refused:
        drift(wanted(spec_with(fake.url + "/nope"), SECRETS))
    for error in (unreachable.value, refused.value):
        assert "getWebhookInfo" in str(error)
        assert TOKEN not in str(error) and TOKEN.split(":")[1] not in str(error)


def test_a_webhook_without_a_public_url_gets_a_plan_warning_and_no_registration() -> None:
    text = """version: 2
models:
  default: local
  providers:
    local: {provider: builtin}
channels:
  telegram:
    enabled: true
    bot_token: ${env:TG_TOKEN}
    webhook_secret: ${env:TG_HOOK}
deploy:
  server_name: chat.example.com
"""
    spec = parse_spec(text, "assistant.yaml")  # TLS may end before nginx: valid, but nothing to register
    assert wanted(spec, SECRETS) is None
    (warning,) = [w for w in exposure_warnings(spec) if "telegram" in w]
    assert "no public HTTPS URL" in warning and "public_url" in warning and "mode: polling" in warning
    with_tls = text + "  ports: {https: 443}\nsecurity:\n  tls: {enabled: true, certificate: /c.pem, key: /k.pem}\n"
    spec = parse_spec(with_tls, "assistant.yaml")
    assert wanted(spec, SECRETS).url == "https://chat.example.com/webhooks/telegram"
    assert not [w for w in exposure_warnings(spec) if "telegram" in w]
    polling = parse_spec(text.replace("    enabled: true\n", "    enabled: true\n    mode: polling\n", 1))
    assert not [w for w in exposure_warnings(polling) if "telegram" in w]


def test_plan_shows_the_difference_and_apply_registers_the_webhook(tmp_path, fake) -> None:
    deployment = Deployment(tmp_path, env=ENV)
    data = deployment.data
    data["channels"]["telegram"] = telegram(fake.url)
    deployment.rewrite(data)
    planned = deployment.run("plan", "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    assert f"+ telegram webhook {PUBLIC}" in planned.stdout
    with applied(deployment) as running:
        assert fake.bot.webhook["url"] == PUBLIC and fake.bot.webhook["secret_token"] == HOOK_SECRET
        assert tuple(fake.bot.webhook["allowed_updates"]) == TELEGRAM_ALLOWED_UPDATES
        again = running.run("plan", "--detailed-exitcode")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "telegram webhook" not in again.stdout
        fake.bot.webhook = {}  # someone deleted it by hand: plan sees it, exit 2
        drifted = running.run("plan", "--detailed-exitcode")
        assert drifted.returncode == 2 and f"+ telegram webhook {PUBLIC}" in drifted.stdout
        for output in (planned, again, drifted):
            assert TOKEN not in output.stdout + output.stderr
