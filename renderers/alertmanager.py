"""Alertmanager on monitoring hosts: `alertmanager.yml` from `monitoring.alertmanager`.

Every receiver gets every alert (one child route each, `continue: true`); the root route's own
receiver has no integrations, so with no receivers declared alerts are only visible in the UI.

Rendered for the version the host has or will get (`Target.alertmanager_version`, from the host's
facts; unknown is taken for Debian 12's 0.25, the oldest apply installs). Secrets never sit in a
world-readable file:
- the SMTP password is `smtp_auth_password_file`, a 0600 file `secrets/<secret name>` (0.25 has it);
- a telegram bot token, from 0.26 on, is `bot_token_file`, a 0600 file `secrets/<secret name>`;
- in 0.25 it can only be inline, so with a telegram receiver the live `alertmanager.yml` is itself a
  0600 secret file written at apply time (`secret_files`), and `render` writes the same config with
  the token replaced by its secret name as `alertmanager.redacted.yml`, for review and the golden
  files. Otherwise `alertmanager.yml` is an ordinary rendered file.
"""

from __future__ import annotations

from ..schema.spec import Receiver, Spec
from .base import Files, Renderer, Target
from .prometheus import INSTANCE_DOWN, dump_yaml

GROUP_BY = ["alertname", "instance"]
REPEAT_INTERVAL = "4h"
# Not a valid spec Name (leading underscore), so it never clashes with a declared receiver.
UNROUTED = "_unrouted"
CONFIG = "alertmanager.yml"
REDACTED = "alertmanager.redacted.yml"
SECRETS_DIR = "secrets"
SMTP_PASSWORD_SECRET = "monitoring.alertmanager.smtp.auth_password"


def bot_token_secret(index: int) -> str:
    """The secret name of a receiver's token: the dotted location of its spec field."""
    return f"monitoring.alertmanager.receivers.{index}.bot_token"


def _sender_domain(server_name: str) -> str:
    domain = server_name.removeprefix("*.")
    return "localhost" if "*" in domain or ":" in domain else domain


def duration(seconds: int) -> str:
    """An Alertmanager duration: whole minutes as `5m`, anything else in seconds."""
    return f"{seconds // 60}m" if seconds and seconds % 60 == 0 else f"{seconds}s"


def has_telegram(spec: Spec) -> bool:
    return any(r.kind == "telegram" for r in spec.monitoring.alertmanager.receivers)


def reads_token_files(target: Target) -> bool:
    """Whether the host's Alertmanager has `bot_token_file` (0.26 and later)."""
    parts = (target.alertmanager_version or "0.25").split(".")[:2]
    return tuple(int(p) for p in parts) >= (0, 26)


def _inline_tokens(target: Target) -> bool:
    """The live config holds a telegram token itself, so it must be a secret file."""
    return has_telegram(target.spec) and not reads_token_files(target)


def _integrations(target: Target, index: int, receiver: Receiver, tokens: dict[str, str]) -> dict:
    if receiver.kind == "webhook":
        return {"webhook_configs": [{"url": str(receiver.url), "send_resolved": True}]}
    if receiver.kind == "email":
        return {"email_configs": [{"to": receiver.email, "send_resolved": True}]}
    name = bot_token_secret(index)
    if reads_token_files(target):
        path = f"{target.current}/alertmanager/{SECRETS_DIR}/{name}"
        return {"telegram_configs": [{"chat_id": receiver.chat_id, "bot_token_file": path, "send_resolved": True}]}
    # The redacted copy names the secret: a non-empty token, so it loads in amtool like the live one.
    token = tokens.get(name, f"<secret {name}>")
    return {"telegram_configs": [{"chat_id": receiver.chat_id, "bot_token": token, "send_resolved": True}]}


def _global(target: Target) -> dict:
    spec = target.spec
    settings: dict = {"resolve_timeout": "5m"}
    if any(r.kind == "email" for r in spec.monitoring.alertmanager.receivers):
        smtp = spec.monitoring.alertmanager.smtp
        settings.update(
            smtp_smarthost=smtp.smarthost,
            smtp_from=smtp.sender or f"alertmanager@{_sender_domain(spec.deploy.server_name)}",
            smtp_require_tls=smtp.require_tls,
        )
        if smtp.auth_username is not None:
            settings.update(
                smtp_auth_username=smtp.auth_username,
                smtp_auth_password_file=f"{target.current}/alertmanager/{SECRETS_DIR}/{SMTP_PASSWORD_SECRET}",
            )
    return settings


def inhibit_rules() -> list[dict]:
    return [
        # A critical alert makes the warning of the same problem on the same instance noise.
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "instance"],
        },
        # An instance that cannot be scraped explains every other alert about it.
        {
            "source_matchers": [f'alertname="{INSTANCE_DOWN}"'],
            "target_matchers": [f'alertname!="{INSTANCE_DOWN}"'],
            "equal": ["instance"],
        },
    ]


def build_config(target: Target, tokens: dict[str, str] | None = None) -> dict:
    """The config; telegram tokens are taken from `tokens` (secret name -> value), else redacted."""
    alertmanager = target.spec.monitoring.alertmanager
    receivers = alertmanager.receivers
    return {
        "global": _global(target),
        "route": {
            "receiver": UNROUTED,
            "group_by": GROUP_BY,
            "group_wait": duration(alertmanager.group_wait_seconds),
            "group_interval": duration(alertmanager.group_interval_seconds),
            "repeat_interval": REPEAT_INTERVAL,
            "routes": [{"receiver": r.name, "continue": True} for r in receivers],
        },
        "receivers": [{"name": UNROUTED}]
        + [{"name": r.name, **_integrations(target, i, r, tokens or {})} for i, r in enumerate(receivers)],
        "inhibit_rules": inhibit_rules(),
    }


def render(target: Target) -> Files:
    return {REDACTED if _inline_tokens(target) else CONFIG: dump_yaml(build_config(target))}


def secret_files(target: Target, values: dict[str, str]) -> Files:
    """The SMTP password as a bare value (no newline), and each telegram token: as a bare value
    where `bot_token_file` exists, else inside the live config."""
    files = {}
    smtp = target.spec.monitoring.alertmanager.smtp
    if smtp.auth_password is not None and SMTP_PASSWORD_SECRET in values:
        files[f"{SECRETS_DIR}/{SMTP_PASSWORD_SECRET}"] = values[SMTP_PASSWORD_SECRET]
    if _inline_tokens(target):
        files[CONFIG] = dump_yaml(build_config(target, values))
    elif reads_token_files(target):
        for index, receiver in enumerate(target.spec.monitoring.alertmanager.receivers):
            name = bot_token_secret(index)
            if receiver.kind == "telegram" and name in values:
                files[f"{SECRETS_DIR}/{name}"] = values[name]
    return files


RENDERER = Renderer(
    name="alertmanager",
    service="alertmanager",
    render=render,
    applies=lambda t: t.has_role("monitoring") and t.spec.monitoring.alertmanager.enabled,
    # The live file: apply stages the secret files before the check runs.
    check="amtool check-config {dir}/alertmanager.yml",
    secret_files=secret_files,
)
