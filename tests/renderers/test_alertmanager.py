"""renderers/alertmanager.py against the real amtool and Alertmanager: every receiver kind loads,
no secret value reaches the config, and the inhibition rules suppress what they promise."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from assistantctl.renderers import render_target
from assistantctl.renderers.alertmanager import RENDERER, bot_token_secret, render, secret_files
from assistantctl.renderers.prometheus import alert_rules
from monitoring_fixtures import assert_ok, monitoring_overrides, run, tool

RECEIVERS = {
    "webhook": {"name": "hook", "kind": "webhook", "url": "https://hooks.example.com/alert?a=1&b='x'"},
    "email": {"name": "ops", "kind": "email", "email": "ops@example.com"},
    "telegram": {"name": "phone", "kind": "telegram", "chat_id": -1001234, "bot_token": "${env:TG_ALERT_TOKEN}"},
}
TOKEN = "123456:SECRET-token-value"


def am_target(make_target, *receivers: dict, **deploy):
    overrides = monitoring_overrides(alertmanager={"enabled": True, "receivers": list(receivers)})
    overrides["deploy"].update(deploy)
    return make_target(overrides)


def stage(target, write_files, folder: Path) -> Path:
    return write_files(folder / "alertmanager", render(target))


def amtool_check(path: Path) -> subprocess.CompletedProcess:
    return run("amtool", "check-config", path)


def test_applies_only_on_monitoring_hosts_with_alertmanager_enabled(make_target):
    assert not RENDERER.applies(make_target())
    assert not RENDERER.applies(make_target(monitoring_overrides()))
    assert RENDERER.applies(am_target(make_target))


@pytest.mark.parametrize("kind", ["webhook", "email"])
def test_each_receiver_kind_passes_amtool(kind, make_target, write_files, tmp_path):
    target = am_target(make_target, RECEIVERS[kind])
    folder = stage(target, write_files, tmp_path)
    assert_ok(amtool_check(folder / "alertmanager.yml"))
    config = yaml.safe_load(render(target)["alertmanager.yml"])
    assert config["route"]["routes"] == [{"receiver": RECEIVERS[kind]["name"], "continue": True}]


def test_no_receivers_still_loads_with_an_unrouted_default(make_target, write_files, tmp_path):
    folder = stage(am_target(make_target), write_files, tmp_path)
    assert_ok(amtool_check(folder / "alertmanager.yml"))


def test_telegram_token_is_a_file_reference_never_a_value(make_target, write_files, tmp_path):
    target = am_target(make_target, RECEIVERS["webhook"], RECEIVERS["telegram"])
    text = render(target)["alertmanager.yml"]
    name = bot_token_secret(1)
    assert name == "monitoring.alertmanager.receivers.1.bot_token"
    telegram = yaml.safe_load(text)["receivers"][2]["telegram_configs"][0]
    assert telegram == {
        "chat_id": -1001234,
        "send_resolved": True,
        "bot_token_file": f"{target.current}/alertmanager/secrets/{name}",
    }
    assert "TG_ALERT_TOKEN" not in text and "bot_token:" not in text
    assert secret_files(target, {name: TOKEN, "models.providers.x.api_key": "other"}) == {f"secrets/{name}": TOKEN}


def test_telegram_config_loads_where_bot_token_file_exists(make_target, write_files, tmp_path):
    """`bot_token_file` arrived in Alertmanager 0.26; Debian bookworm ships 0.25, whose amtool
    rejects exactly that field. Everything else must load: checked with the field swapped for an
    inline placeholder, and the verdict on the shipped file pinned to the version."""
    folder = stage(am_target(make_target, *RECEIVERS.values()), write_files, tmp_path)
    shipped = amtool_check(folder / "alertmanager.yml")
    version = subprocess.run([tool("amtool"), "--version"], check=False, capture_output=True, text=True)
    if "version 0.25." in version.stdout + version.stderr:
        assert shipped.returncode != 0 and "field bot_token_file not found" in shipped.stdout + shipped.stderr
    else:
        assert_ok(shipped)
    config = yaml.safe_load((folder / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for telegram in receiver.get("telegram_configs", []):
            telegram["bot_token"] = telegram.pop("bot_token_file") and "placeholder"
    (folder / "inline.yml").write_text(yaml.safe_dump(config))
    assert_ok(amtool_check(folder / "inline.yml"))


def test_email_uses_local_smtp_from_the_server_name(make_target):
    target = am_target(make_target, RECEIVERS["email"], server_name="*.chat.example.org")
    settings = yaml.safe_load(render(target)["alertmanager.yml"])["global"]
    assert settings["smtp_smarthost"] == "localhost:25"
    assert settings["smtp_from"] == "alertmanager@chat.example.org"
    no_email = yaml.safe_load(render(am_target(make_target, RECEIVERS["webhook"]))["alertmanager.yml"])
    assert "smtp_smarthost" not in no_email["global"]


def test_grouping_and_inhibition_match_the_alert_rules(make_target):
    target = am_target(make_target, RECEIVERS["webhook"])
    config = yaml.safe_load(render(target)["alertmanager.yml"])
    assert config["route"]["group_by"] == ["alertname", "instance"]
    names = {a.name for a in alert_rules(target.spec)}
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"]:
            if matcher.startswith("alertname="):
                assert matcher.split('"')[1] in names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alert(name: str, instance: str, severity: str) -> dict:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "instance": instance, "severity": severity},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


def _wait_for_states(base: str, expected: dict) -> dict[tuple[str, str, str], str]:
    """Alert states as the API reports them, polled until they match (inhibition is asynchronous)."""
    deadline = time.monotonic() + 15
    while True:
        alerts = httpx.get(f"{base}/api/v2/alerts").json()
        states = {
            (a["labels"]["alertname"], a["labels"]["instance"], a["labels"]["severity"]): a["status"]["state"]
            for a in alerts
        }
        if states == expected or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def test_running_alertmanager_inhibits_warnings_and_alerts_of_a_down_instance(make_target, write_files, tmp_path):
    folder = stage(am_target(make_target, RECEIVERS["webhook"]), write_files, tmp_path)
    port = _free_port()
    process = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not _ready(base):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "alertmanager did not become ready"
            time.sleep(0.1)
        alerts = [
            _alert("AssistantHighErrorRate", "a:8081", "critical"),
            _alert("AssistantHighErrorRate", "a:8081", "warning"),  # inhibited: same alert, critical firing
            _alert("AssistantHighErrorRate", "b:8081", "warning"),
            _alert("AssistantInstanceDown", "c:9100", "critical"),
            _alert("AssistantDiskFull", "c:9100", "warning"),  # inhibited: its instance is down
            _alert("AssistantDiskFull", "d:9100", "warning"),
        ]
        httpx.post(f"{base}/api/v2/alerts", json=alerts).raise_for_status()
        expected = {
            ("AssistantHighErrorRate", "a:8081", "critical"): "active",
            ("AssistantHighErrorRate", "a:8081", "warning"): "suppressed",
            ("AssistantHighErrorRate", "b:8081", "warning"): "active",
            ("AssistantInstanceDown", "c:9100", "critical"): "active",
            ("AssistantDiskFull", "c:9100", "warning"): "suppressed",
            ("AssistantDiskFull", "d:9100", "warning"): "active",
        }
        assert _wait_for_states(base, expected) == expected
    finally:
        process.terminate()
        process.wait(timeout=10)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_rendering_is_byte_identical_for_the_same_spec(make_target):
    target = am_target(make_target, *RECEIVERS.values())
    assert render_target(target, only={"alertmanager"}) == render_target(target, only={"alertmanager"})
