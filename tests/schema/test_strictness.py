"""The loader is as strict as the published schema: no duplicate keys, no type coercion, and a
did-you-mean for a misspelt key or value wherever it is."""

from __future__ import annotations

import pytest
import yaml

from assistantctl.schema.loader import parse_spec
from spec_snippets import MINIMAL, problems

# --- duplicate keys ---------------------------------------------------------------------------


def test_a_duplicate_top_level_key_is_an_error_naming_both_positions():
    text = MINIMAL + "name: first\nname: second\n"
    assert problems(text) == ["spec.yaml:7:1: duplicate key 'name' (hint: it is first set at line 6, column 1)"]


@pytest.mark.parametrize(
    ("text", "position", "key"),
    [
        (
            MINIMAL.replace("      provider: builtin", "      provider: builtin\n      provider: openai"),
            "6:7",
            "provider",
        ),
        (MINIMAL + "limits:\n  rate_limit:\n    burst: 5\n    burst: 6\n", "9:5", "burst"),
        (MINIMAL + "deploy:\n  hosts:\n    - name: a\n      roles: [edge]\n      name: b\n", "10:7", "name"),
        (MINIMAL + "channels: {web: {enabled: true, enabled: false}}\n", "6:33", "enabled"),
        (MINIMAL.replace("    local:", "    local:\n      provider: builtin\n    local:"), "6:5", "local"),
    ],
)
def test_a_duplicate_key_at_any_depth_is_an_error(text, position, key):
    assert problems(text)[0].startswith(f"spec.yaml:{position}: duplicate key '{key}'")


def test_every_duplicate_is_reported_at_once_with_the_other_problems():
    text = MINIMAL + "name: a\nname: b\nlimits:\n  timeouts: {}\n  timeouts: {}\n  burst: 3\n"
    assert [line.split(": ")[0] for line in problems(text)] == ["spec.yaml:7:1", "spec.yaml:10:3", "spec.yaml:11:3"]


def test_a_merge_key_may_still_override_what_it_merges():
    text = MINIMAL + "limits:\n  rate_limit: &base {requests_per_minute: 10, burst: 5}\n"
    text += "channels:\n  web:\n    enabled: true\n"
    spec = parse_spec(text + "deploy:\n  ports: {<<: {http: 9000, engine: 9001}, http: 9002}\n", "spec.yaml")
    assert (spec.deploy.ports.http, spec.deploy.ports.engine) == (9002, 9001)


# --- no coercion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "position", "field"),
    [
        ("limits:\n  rate_limit:\n    requests_per_minute: '600'\n", "8:26", "limits.rate_limit.requests_per_minute"),
        ("limits:\n  timeouts:\n    read_seconds: '30'\n", "8:19", "limits.timeouts.read_seconds"),
        ("channels:\n  web:\n    enabled: 'true'\n", "8:14", "channels.web.enabled"),
        ("limits:\n  concurrency:\n    workers: 2.0\n", "8:14", "limits.concurrency.workers"),
        ("limits:\n  concurrency:\n    workers: true\n", "8:14", "limits.concurrency.workers"),
        ("security:\n  allowed_users: [42]\n", "7:19", "security.allowed_users.0"),
        ("deploy:\n  ports:\n    http: '9000'\n", "8:11", "deploy.ports.http"),
    ],
)
def test_values_are_not_coerced_to_the_declared_type(snippet, position, field):
    [line] = problems(MINIMAL + snippet)
    assert line.startswith(f"spec.yaml:{position}: {field}: Input should be a valid"), line


def test_a_quoted_number_inside_a_model_entry_is_refused():
    text = MINIMAL.replace("provider: builtin", "provider: builtin\n      requests_per_minute: '600'")
    [line] = problems(text)
    assert line.startswith(
        "spec.yaml:6:28: models.providers.local.requests_per_minute: Input should be a valid integer"
    )


def test_values_the_schema_takes_as_text_still_load():
    text = MINIMAL + (
        "channels:\n  web: {cors_origins: ['https://chat.example.com']}\n"
        "security:\n  allowed_networks: [10.0.0.0/8, '::1/128']\n"
        "deploy:\n  hosts:\n    - {name: a, address: 10.0.0.1, connection: ssh, python: /usr/bin/python3}\n"
    )
    spec = parse_spec(text, "spec.yaml")
    assert [str(n) for n in spec.security.allowed_networks] == ["10.0.0.0/8", "::1/128"]
    assert spec.channels.web.cors_origins == ["https://chat.example.com"]  # an origin, as browsers send it


def test_a_network_must_be_text_not_a_number():
    [line] = problems(MINIMAL + "security:\n  allowed_networks: [167772160]\n")
    assert line.startswith("spec.yaml:7:22: security.allowed_networks.0:"), line


def test_an_integer_is_accepted_where_seconds_may_be_fractional():
    """The published schema's `number` includes integers: strict mode must not refuse `30` for a float."""
    spec = parse_spec(yaml.safe_dump(yaml.safe_load(MINIMAL + "limits:\n  timeouts: {read_seconds: 30}\n")))
    assert spec.limits.timeouts.read_seconds == 30


# --- did you mean -----------------------------------------------------------------------------


def test_a_misspelt_key_inside_a_model_entry_suggests_the_right_one():
    text = MINIMAL.replace("provider: builtin", "provder: builtin")
    assert "spec.yaml:5:7: unknown key 'models.providers.local.provder' (hint: did you mean 'provider'?)" in (
        problems(text)
    )


@pytest.mark.parametrize(
    ("snippet", "dotted", "right"),
    [
        ("nmae: x\n", "nmae", "name"),
        ("channels:\n  telegram:\n    bot_tokn: x\n", "channels.telegram.bot_tokn", "bot_token"),
        ("skills:\n  - name: s\n    entrypoint: builtin:redact\n    hook: [pre]\n", "skills.0.hook", "hooks"),
        ("deploy:\n  hosts:\n    - name: a\n      adress: 10.0.0.1\n", "deploy.hosts.0.adress", "address"),
        (
            "monitoring:\n  alertmanager:\n    receivers:\n"
            "      - {name: r, kind: webhook, url: 'http://x', chatid: 1}\n",
            "monitoring.alertmanager.receivers.0.chatid",
            "chat_id",
        ),
        (
            "security:\n  history_encryption:\n    keys:\n      - {id: a, key: '${env:K}', kee: x}\n",
            "security.history_encryption.keys.0.kee",
            "key",
        ),
        (
            "deploy:\n  ha: {virtual_ip: 10.0.0.1, interface: eth0, hosts: [a, b], routerid: 3}\n",
            "deploy.ha.routerid",
            "router_id",
        ),
        (
            "limits:\n  global_rate_limit: {requests_per_minute: 5, burst: 1, brust: 2}\n",
            "limits.global_rate_limit.brust",
            "burst",
        ),
    ],
)
def test_a_misspelt_key_at_any_depth_suggests_the_right_one(snippet, dotted, right):
    lines = problems(MINIMAL + snippet)
    assert any(f"unknown key '{dotted}' (hint: did you mean '{right}'?)" in line for line in lines), lines


@pytest.mark.parametrize(
    ("text", "dotted", "right"),
    [
        (MINIMAL.replace("provider: builtin", "provider: opanai"), "models.providers.local.provider", "openai"),
        (MINIMAL + "monitoring:\n  logging:\n    level: warn\n", "monitoring.logging.level", "warning"),
        (MINIMAL + "skills:\n  - {name: s, entrypoint: 'builtin:redact', hooks: [psot]}\n", "skills.0.hooks.0", "post"),
        (MINIMAL + "deploy:\n  hosts:\n    - {name: a, roles: [egde]}\n", "deploy.hosts.0.roles.0", "edge"),
        (MINIMAL + "security:\n  anonymous: loopbak\n", "security.anonymous", "loopback"),
    ],
)
def test_a_misspelt_choice_suggests_the_right_one(text, dotted, right):
    lines = problems(text)
    assert any(
        line.split(": ", 1)[1].startswith(f"{dotted}: ") and f"did you mean '{right}'?" in line for line in lines
    ), lines


def test_a_choice_far_from_every_option_lists_them():
    [line] = problems(MINIMAL.replace("provider: builtin", "provider: zzz"))
    assert line.endswith("(hint: one of: builtin, openai, anthropic, ollama, custom)"), line
