"""renderers/alertmanager.py against the real amtool and Alertmanager: every receiver kind loads,
no secret value reaches the config, and the inhibition rules suppress what they promise."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from assistantctl.bundle import build_bundle
from assistantctl.renderers import Target, render_target
from assistantctl.renderers.alertmanager import (
    RENDERER,
    SMTP_PASSWORD_SECRET,
    bot_token_secret,
    render,
    secret_files,
)
from assistantctl.renderers.prometheus import alert_rules
from assistantctl.schema.loader import SpecError, load_spec
from assistantctl.schema.secrets import secret_refs
from monitoring_fixtures import assert_ok, monitoring_overrides, run, tool

PRODUCTION = Path(__file__).resolve().parents[2] / "examples" / "production.yaml"

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


def test_telegram_token_is_only_in_the_0600_live_config(make_target, write_files, tmp_path):
    """Debian 12's Alertmanager 0.25 has no `bot_token_file`: the token is inline, so the live
    config is a secret file; the rendered copy names the secret instead and both load in amtool."""
    target = am_target(make_target, RECEIVERS["webhook"], RECEIVERS["telegram"])
    name = bot_token_secret(1)
    assert name == "monitoring.alertmanager.receivers.1.bot_token"
    rendered = render(target)
    assert set(rendered) == {"alertmanager.redacted.yml"}
    assert (
        "TG_ALERT_TOKEN" not in rendered["alertmanager.redacted.yml"]
        and TOKEN not in rendered["alertmanager.redacted.yml"]
    )
    secrets = secret_files(target, {name: TOKEN, "models.providers.x.api_key": "other"})
    assert set(secrets) == {"alertmanager.yml"} and "other" not in secrets["alertmanager.yml"]
    telegram = yaml.safe_load(secrets["alertmanager.yml"])["receivers"][2]["telegram_configs"][0]
    assert telegram == {"chat_id": -1001234, "send_resolved": True, "bot_token": TOKEN}
    folder = write_files(tmp_path / "alertmanager", {**rendered, **secrets})
    assert_ok(amtool_check(folder / "alertmanager.yml"))
    assert_ok(amtool_check(folder / "alertmanager.redacted.yml"))


def test_bundle_keeps_every_secret_out_of_world_readable_files(make_target):
    smtp = {"smarthost": "smtp.example.com:587", "auth_username": "alerts", "auth_password": "${env:SMTP_PW}"}
    overrides = monitoring_overrides(
        alertmanager={"enabled": True, "smtp": smtp, "receivers": [RECEIVERS["email"], RECEIVERS["telegram"]]}
    )
    target = make_target(overrides)
    values = {bot_token_secret(1): TOKEN, SMTP_PASSWORD_SECRET: "smtp-pass-word"}
    files = {f.path: f for f in build_bundle(target, secrets=values, only={"alertmanager"}).files}
    for f in files.values():
        holds = TOKEN.encode() in f.content or b"smtp-pass-word" in f.content
        assert not holds or (f.mode == 0o600 and f.sensitive), f.path
    assert files["alertmanager/alertmanager.yml"].mode == 0o600
    assert files[f"alertmanager/secrets/{SMTP_PASSWORD_SECRET}"].content == b"smtp-pass-word"


def test_smtp_settings_come_from_the_spec(make_target, write_files, tmp_path):
    smtp = {
        "smarthost": "smtp.example.com:587",
        "from": "alerts@example.com",
        "auth_username": "alerts",
        "auth_password": "${env:SMTP_PW}",
        "require_tls": True,
    }
    overrides = monitoring_overrides(alertmanager={"enabled": True, "smtp": smtp, "receivers": [RECEIVERS["email"]]})
    target = make_target(overrides)
    rendered = render(target)
    settings = yaml.safe_load(rendered["alertmanager.yml"])["global"]
    assert settings == {
        "resolve_timeout": "5m",
        "smtp_smarthost": "smtp.example.com:587",
        "smtp_from": "alerts@example.com",
        "smtp_auth_username": "alerts",
        "smtp_auth_password_file": f"{target.current}/alertmanager/secrets/{SMTP_PASSWORD_SECRET}",
        "smtp_require_tls": True,
    }
    assert "SMTP_PW" not in rendered["alertmanager.yml"]
    folder = write_files(tmp_path / "alertmanager", {**rendered, **secret_files(target, {SMTP_PASSWORD_SECRET: "pw"})})
    assert (folder / "secrets" / SMTP_PASSWORD_SECRET).read_text() == "pw"
    assert_ok(amtool_check(folder / "alertmanager.yml"))


def test_smtp_login_needs_both_username_and_password(make_target):
    with pytest.raises(SpecError, match="auth_username and auth_password"):
        make_target(monitoring_overrides(alertmanager={"smtp": {"auth_username": "alerts"}}))


def test_production_example_monitoring_config_loads_in_the_installed_alertmanager(tmp_path):
    """The acceptance of issue 16: monitor-1's bundle, secrets filled in, passes the amtool that
    apply's Alertmanager ships (Debian 12: 0.25) and starts the real alertmanager."""
    spec = load_spec(PRODUCTION)
    host = next(h for h in spec.deploy.hosts if h.name == "monitor-1")
    target = Target(spec=spec, host=host, root=str(tmp_path / "root"), python=sys.executable)
    values = {name: f"value-of-{name}" for name in secret_refs(spec)}
    build_bundle(target, secrets=values, only={"alertmanager"}).write(tmp_path / "release")
    config = tmp_path / "release" / "alertmanager" / "alertmanager.yml"
    assert_ok(amtool_check(config))
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    telegram = [r for r in yaml.safe_load(config.read_text())["receivers"] if "telegram_configs" in r]
    assert telegram[0]["telegram_configs"][0]["bot_token"] == f"value-of-{bot_token_secret(2)}"
    process, base = _start_alertmanager(config, tmp_path)
    try:
        assert httpx.get(f"{base}/api/v2/status").json()["config"]["original"].count("telegram_configs") == 1
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_email_uses_local_smtp_from_the_server_name(make_target):
    target = am_target(make_target, RECEIVERS["email"], server_name="*.chat.example.org")
    settings = yaml.safe_load(render(target)["alertmanager.yml"])["global"]
    assert settings["smtp_smarthost"] == "localhost:25"
    assert settings["smtp_from"] == "alertmanager@chat.example.org"
    assert settings["smtp_require_tls"] is False and "smtp_auth_username" not in settings
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
    process, base = _start_alertmanager(folder / "alertmanager.yml", tmp_path)
    try:
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


def _start_alertmanager(config: Path, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """The real alertmanager on a free loopback port, ready; the caller terminates it."""
    port = _free_port()
    process = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not _ready(base):
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode())
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("alertmanager did not become ready")
        time.sleep(0.1)
    return process, base


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_rendering_is_byte_identical_for_the_same_spec(make_target):
    target = am_target(make_target, *RECEIVERS.values())
    assert render_target(target, only={"alertmanager"}) == render_target(target, only={"alertmanager"})


def test_telegram_token_is_a_0600_token_file_where_alertmanager_has_bot_token_file(make_target, write_files, tmp_path):
    """Alertmanager 0.26+ (as the host's facts report it) reads the token from `bot_token_file`:
    the config is an ordinary rendered file and only the token sits in a 0600 secret file."""
    import dataclasses

    target = dataclasses.replace(
        am_target(make_target, RECEIVERS["webhook"], RECEIVERS["telegram"]), alertmanager_version="0.26.0"
    )
    name = bot_token_secret(1)
    rendered = render(target)
    assert set(rendered) == {"alertmanager.yml"}
    telegram = yaml.safe_load(rendered["alertmanager.yml"])["receivers"][2]["telegram_configs"][0]
    assert telegram == {
        "chat_id": -1001234,
        "send_resolved": True,
        "bot_token_file": f"{target.current}/alertmanager/secrets/{name}",
    }
    assert secret_files(target, {name: TOKEN}) == {f"secrets/{name}": TOKEN}
    files = {f.path: f for f in build_bundle(target, secrets={name: TOKEN}, only={"alertmanager"}).files}
    assert files[f"alertmanager/secrets/{name}"].mode == 0o600
    assert all(TOKEN.encode() not in f.content for p, f in files.items() if f.mode != 0o600)
    # Debian 12's 0.25 (the oldest version apply may find, and what an unknown version is taken for)
    # keeps the inline token in the 0600 live config.
    for old in ("0.25.0", None):
        legacy = dataclasses.replace(target, alertmanager_version=old)
        assert set(render(legacy)) == {"alertmanager.redacted.yml"}


def test_facts_report_the_alertmanager_version_the_host_has_or_will_get():
    from assistantctl import facts

    installed = run("prometheus-alertmanager", "--version").stdout + run("prometheus-alertmanager", "--version").stderr
    found = facts.dispatch({"root": "/nonexistent-root", "alertmanager": True})["alertmanager_version"]
    assert found is not None and f"version {found} " in installed
    # only monitoring hosts are asked (remote.fetch_facts): the others skip the cost
    assert "alertmanager_version" not in facts.dispatch({"root": "/nonexistent-root"})


def test_grouping_times_come_from_the_spec(make_target, write_files, tmp_path):
    """An alert that joins a group already notified waits for the group's interval: five minutes
    by default, seconds in a test (or a spec that wants to hear of every new instance at once)."""
    default = yaml.safe_load(render(am_target(make_target))["alertmanager.yml"])["route"]
    assert (default["group_wait"], default["group_interval"]) == ("30s", "5m")
    overrides = monitoring_overrides(
        alertmanager={"enabled": True, "group_wait_seconds": 2, "group_interval_seconds": 90}
    )
    target = make_target(overrides)
    route = yaml.safe_load(render(target)["alertmanager.yml"])["route"]
    assert (route["group_wait"], route["group_interval"]) == ("2s", "90s")
    assert_ok(amtool_check(stage(target, write_files, tmp_path) / "alertmanager.yml"))


def test_plan_renders_for_the_alertmanager_the_monitoring_host_reports(make_target):
    from assistantctl.targets import planned_target

    target = am_target(make_target, RECEIVERS["telegram"])
    assert planned_target(target, {"alertmanager_version": "0.27.0"}).alertmanager_version == "0.27.0"
    assert set(render(planned_target(target, {"alertmanager_version": "0.27.0"}))) == {"alertmanager.yml"}
    assert set(render(planned_target(target, {"alertmanager_version": None}))) == {"alertmanager.redacted.yml"}
