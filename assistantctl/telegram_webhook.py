"""Telegram's side of a deployment: the webhook Telegram has registered for the bot.

`plan` asks getWebhookInfo (from the controller) and shows a line when the registration differs
from the spec: another URL or other allowed_updates in webhook mode, any webhook at all in polling
mode (Telegram refuses getUpdates while one is set). `apply`, once the hosts switched, makes it so:
setWebhook (url, secret_token = the webhook secret, allowed_updates) on every apply in webhook mode
(the secret cannot be compared), or deleteWebhook.

The bot token is a path segment of every Bot API URL, so it is scrubbed from every message here:
httpx's errors quote the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from .engine.settings import TELEGRAM_ALLOWED_UPDATES
from .schema.checks import telegram_webhook_url

DEFAULT_API_BASE = "https://api.telegram.org"
_TIMEOUT = httpx.Timeout(10.0)


class TelegramError(Exception):
    """A Bot API call failed; the message never holds the token."""


@dataclass(frozen=True)
class Registration:
    """What the spec wants Telegram to have: a webhook `url` (None: no webhook, polling mode)."""

    url: str | None
    allowed_updates: tuple[str, ...]
    api_base: str
    token: str
    secret_token: str | None


def wanted(spec: Any, secrets: dict[str, str]) -> Registration | None:
    """None when there is nothing to register: telegram is off, or a webhook with no public URL
    (plan warns about that one: schema.checks.exposure_warnings)."""
    telegram = spec.channels.telegram
    if not telegram.enabled:
        return None
    url = telegram_webhook_url(spec) if telegram.mode == "webhook" else None
    if telegram.mode == "webhook" and url is None:
        return None
    api_base = str(telegram.api_base).rstrip("/") if telegram.api_base else DEFAULT_API_BASE
    return Registration(
        url,
        TELEGRAM_ALLOWED_UPDATES,
        api_base,
        secrets["channels.telegram.bot_token"],
        secrets.get("channels.telegram.webhook_secret"),
    )


def drift(want: Registration) -> str | None:
    """The plan line for a registration that differs from `want`, or None when it matches."""
    info = _call(want, "getWebhookInfo", {})
    have_url = info.get("url") or None
    have_updates = tuple(info.get("allowed_updates") or ())
    if want.url is None:
        return None if have_url is None else f"- telegram webhook {have_url} (polling mode: apply deletes it)"
    if have_url is None:
        return f"+ telegram webhook {want.url} (allowed_updates: {', '.join(want.allowed_updates)})"
    if have_url != want.url:
        return f"~ telegram webhook {have_url} -> {want.url}"
    if have_updates != want.allowed_updates:
        return f"~ telegram webhook allowed_updates [{', '.join(have_updates)}] -> [{', '.join(want.allowed_updates)}]"
    return None


def register(want: Registration) -> str:
    """Make Telegram's registration `want`; what was done."""
    if want.url is None:
        _call(want, "deleteWebhook", {"drop_pending_updates": False})
        return "telegram webhook deleted (polling mode)"
    body = {"url": want.url, "allowed_updates": list(want.allowed_updates), "drop_pending_updates": False}
    if want.secret_token:
        body["secret_token"] = want.secret_token
    _call(want, "setWebhook", body)
    return f"telegram webhook set to {want.url}"


def sync(want: Registration) -> str | None:
    """What apply does once the hosts switched: delete a webhook polling mode finds, and in webhook
    mode always setWebhook (idempotent): getWebhookInfo never tells the secret_token, so a rotated
    secret would otherwise never reach Telegram. What changed, for the output, or None."""
    change = drift(want)
    if want.url is None:
        return register(want) if change is not None else None
    done = register(want)
    return done if change is not None else None


def _call(want: Registration, method: str, body: dict[str, Any]) -> dict[str, Any]:
    url = f"{want.api_base}/bot{want.token}/{method}"
    try:
        response = httpx.post(url, json=body, timeout=_TIMEOUT)
        answer = response.json()
    except httpx.HTTPError as exc:
        raise TelegramError(_scrub(f"telegram {method}: {type(exc).__name__}: {exc}", want)) from None
    except ValueError:
        raise TelegramError(f"telegram {method}: HTTP {response.status_code}, not JSON") from None
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        description = answer.get("description") if isinstance(answer, dict) else None
        raise TelegramError(_scrub(f"telegram {method} refused: {str(description)[:200]}", want))
    result = answer.get("result")
    return result if isinstance(result, dict) else {}


def _scrub(message: str, want: Registration) -> str:
    for value in (want.token, want.token.split(":", 1)[-1], want.secret_token):
        if value:
            message = message.replace(value, "[secret]")
    return message
