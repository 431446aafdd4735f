"""renderers/engine.py maps the webhook channels into the engine's settings: the settings name each
credential, the 0600 secrets file holds the values, and the engine's webhook registry resolves
every credential from that pair (and refuses to start without one)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from assistantctl.bundle import SECRET_MODE, build_bundle
from assistantctl.engine.channels import Webhooks
from assistantctl.engine.settings import EngineSettings, load_secrets
from assistantctl.renderers.engine import render

CHANNELS = {
    "channels": {
        "telegram": {
            "enabled": True,
            "bot_token": "${env:TG_TOKEN}",
            "webhook_secret": "${env:TG_HOOK}",
            "allowed_users": ["alice_ops", "12345"],
        },
        "wecom": {
            "enabled": True,
            "corp_id": "ww1234567890abcdef",
            "agent_id": 1000002,
            "token": "${env:WECOM_TOKEN}",
            "encoding_aes_key": "${env:WECOM_AES}",
            "secret": "${file:/etc/assistant/wecom-secret}",
            "path": "/hooks/wecom",
        },
        "whatsapp": {
            "enabled": True,
            "phone_number_id": "109876543210",
            "access_token": "${env:WA_ACCESS}",
            "verify_token": "${env:WA_VERIFY}",
            "app_secret": "${env:WA_APP}",
        },
    }
}
VALUES = {
    "channels.telegram.bot_token": "123:FAKE-TG-TOKEN-VALUE",
    "channels.telegram.webhook_secret": "FAKE-TG-HOOK-VALUE",
    "channels.wecom.token": "FAKE-WECOM-TOKEN-VALUE",
    "channels.wecom.encoding_aes_key": "FAKE-WECOM-AES-VALUE",
    "channels.wecom.secret": "FAKE-WECOM-SECRET-VALUE",
    "channels.whatsapp.access_token": "FAKE-WA-ACCESS-VALUE",
    "channels.whatsapp.verify_token": "FAKE-WA-VERIFY-VALUE",
    "channels.whatsapp.app_secret": "FAKE-WA-APP-VALUE",
}


def _channel(settings: EngineSettings, name: str):
    return next(c for c in settings.channels if c.name == name)


def test_enabled_channels_render_settings_that_name_their_secrets_and_never_hold_them(make_target) -> None:
    text = render(make_target(CHANNELS))["settings.json"]
    settings = EngineSettings.model_validate_json(text)
    telegram, wecom, whatsapp = (_channel(settings, n) for n in ("telegram", "wecom", "whatsapp"))
    assert telegram.path == "/webhooks/telegram" and telegram.allowed_users == ["alice_ops", "12345"]
    assert telegram.secrets == {
        "bot_token": "channels.telegram.bot_token",
        "webhook_secret": "channels.telegram.webhook_secret",
    }
    assert wecom.path == "/hooks/wecom" and wecom.options == {"corp_id": "ww1234567890abcdef", "agent_id": 1000002}
    assert wecom.secrets == {p: f"channels.wecom.{p}" for p in ("token", "encoding_aes_key", "secret")}
    assert whatsapp.options == {"phone_number_id": "109876543210"}
    assert whatsapp.secrets == {p: f"channels.whatsapp.{p}" for p in ("access_token", "verify_token", "app_secret")}
    assert all(c.api_base is None for c in settings.channels)  # the platforms' real APIs
    assert settings.secrets_file is not None and settings.secrets_file.endswith("/engine/secrets.json")
    assert "FAKE-" not in text and "${env:" not in text


def test_the_secrets_file_is_0600_and_holds_the_channel_secret_values(make_target, tmp_path: Path) -> None:
    bundle = build_bundle(make_target(CHANNELS), secrets=VALUES, only={"engine"})
    secret_file = next(f for f in bundle.files if f.path == "engine/secrets.json")
    assert secret_file.mode == SECRET_MODE == 0o600 and secret_file.sensitive
    assert json.loads(secret_file.content) == VALUES
    bundle.write(tmp_path / "bundle")
    assert stat.S_IMODE((tmp_path / "bundle" / "engine" / "secrets.json").stat().st_mode) == 0o600
    settings_text = (tmp_path / "bundle" / "engine" / "settings.json").read_text()
    assert not [value for value in VALUES.values() if value in settings_text]


def _rendered_pair(make_target, tmp_path: Path, values: dict[str, str]) -> tuple[EngineSettings, dict[str, str]]:
    bundle = build_bundle(make_target(CHANNELS), secrets=values, only={"engine"})
    bundle.write(tmp_path / "bundle")
    folder = tmp_path / "bundle" / "engine"
    rendered = EngineSettings.model_validate_json((folder / "settings.json").read_text())
    settings = rendered.model_copy(update={"secrets_file": str(folder / "secrets.json")})
    return settings, load_secrets(settings)


def test_the_engine_serves_every_enabled_channel_from_the_rendered_pair(make_target, tmp_path: Path) -> None:
    settings, secrets = _rendered_pair(make_target, tmp_path, VALUES)
    webhooks = Webhooks(settings, secrets)
    assert webhooks.routes() == {
        "/webhooks/telegram": ("POST",),
        "/hooks/wecom": ("GET", "POST"),
        "/webhooks/whatsapp": ("GET", "POST"),
    }


def test_the_engine_refuses_to_start_when_a_channel_secret_is_missing(make_target, tmp_path: Path) -> None:
    values = {k: v for k, v in VALUES.items() if k != "channels.whatsapp.app_secret"}
    settings, secrets = _rendered_pair(make_target, tmp_path, values)
    with pytest.raises(RuntimeError, match="'whatsapp' lacks secret app_secret"):
        Webhooks(settings, secrets)


def test_disabled_channels_render_no_webhook_settings(make_target) -> None:
    settings = EngineSettings.model_validate_json(render(make_target())["settings.json"])
    assert {c.name for c in settings.channels} == {"web", "websocket"}
    assert Webhooks(settings, {}).routes() == {}
