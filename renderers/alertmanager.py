"""Alertmanager on monitoring hosts: `alertmanager.yml` from `monitoring.alertmanager.receivers`.

Every receiver gets every alert (one child route each, `continue: true`); the root route's own
receiver has no integrations, so with no receivers declared alerts are only visible in the UI.
A telegram bot token never enters the config: the receiver names `bot_token_file`, a 0600 file
`secrets/<secret name>` in this folder written at apply time (`secret_files`). `bot_token_file`
needs Alertmanager >= 0.26.
"""

from __future__ import annotations

from ..schema.spec import Receiver, Spec
from .base import Files, Renderer, Target
from .prometheus import INSTANCE_DOWN, dump_yaml

GROUP_BY = ["alertname", "instance"]
GROUP_WAIT = "30s"
GROUP_INTERVAL = "5m"
REPEAT_INTERVAL = "4h"
# Not a valid spec Name (leading underscore), so it never clashes with a declared receiver.
UNROUTED = "_unrouted"
# Email goes through the host's own MTA; over loopback STARTTLS buys nothing and is often absent.
SMTP_SMARTHOST = "localhost:25"
SECRETS_DIR = "secrets"


def bot_token_secret(index: int) -> str:
    """The secret name of a receiver's token: the dotted location of its spec field."""
    return f"monitoring.alertmanager.receivers.{index}.bot_token"


def _sender_domain(server_name: str) -> str:
    domain = server_name.removeprefix("*.")
    return "localhost" if "*" in domain or ":" in domain else domain


def _integrations(target: Target, index: int, receiver: Receiver) -> dict:
    if receiver.kind == "webhook":
        return {"webhook_configs": [{"url": str(receiver.url), "send_resolved": True}]}
    if receiver.kind == "email":
        return {"email_configs": [{"to": receiver.email, "send_resolved": True}]}
    token_file = f"{target.current}/alertmanager/{SECRETS_DIR}/{bot_token_secret(index)}"
    return {"telegram_configs": [{"chat_id": receiver.chat_id, "bot_token_file": token_file, "send_resolved": True}]}


def _global(spec: Spec) -> dict:
    settings: dict = {"resolve_timeout": "5m"}
    if any(r.kind == "email" for r in spec.monitoring.alertmanager.receivers):
        settings.update(
            smtp_smarthost=SMTP_SMARTHOST,
            smtp_from=f"alertmanager@{_sender_domain(spec.deploy.server_name)}",
            smtp_require_tls=False,
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


def build_config(target: Target) -> dict:
    receivers = target.spec.monitoring.alertmanager.receivers
    return {
        "global": _global(target.spec),
        "route": {
            "receiver": UNROUTED,
            "group_by": GROUP_BY,
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
            "routes": [{"receiver": r.name, "continue": True} for r in receivers],
        },
        "receivers": [{"name": UNROUTED}]
        + [{"name": r.name, **_integrations(target, i, r)} for i, r in enumerate(receivers)],
        "inhibit_rules": inhibit_rules(),
    }


def render(target: Target) -> Files:
    return {"alertmanager.yml": dump_yaml(build_config(target))}


def secret_files(target: Target, values: dict[str, str]) -> Files:
    """One file per telegram token, holding the bare value (no newline)."""
    files = {}
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
    check="amtool check-config {dir}/alertmanager.yml",
    secret_files=secret_files,
)
