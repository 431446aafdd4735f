"""renderers/compose.py against Debian's docker-compose 1.29 (`config`, no daemon needed) and the
compose-spec JSON schema it ships: the default and a rich spec load, secrets stay out of the file,
and healthchecks, restarts, volumes, limits and the ELK profile are what the spec asks for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from assistantctl.checks import run_checks
from assistantctl.renderers.compose import COMPOSE_FILE, RENDERER, ROOT, TAG_VARIABLE, render, secret_files
from assistantctl.renderers.compose_networks import MONITORING_SUBNET
from assistantctl.renderers.supervisor import ENGINE_STOP_GRACE_SECONDS
from assistantctl.schema.secrets import secret_refs
from cli_helpers import assistantctl, default_spec, write_spec

COMPOSE_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
ELK_SERVICES = {"elasticsearch", "logstash", "kibana", "filebeat"}
MONITORING_SERVICES = {"prometheus", "alertmanager", "grafana", "node-exporter"}
# Fake values, distinctive enough that finding one anywhere means a secret leaked.
FAKE = {
    "models.providers.cloud.api_key": "sk-FAKE-OPENAI-1234",
    "monitoring.grafana.admin_password": "FAKE-GRAFANA-PW-5678",
}


def docker_compose(folder: Path, *args: str, tag: str | None = "t1") -> subprocess.CompletedProcess:
    """docker-compose on `folder`'s file, with the image tag `assistantctl compose` puts in `.env`."""
    found = shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose (these tests need the real tool)")
    cmd = [found, "-f", str(folder / COMPOSE_FILE), *args]
    env = {k: v for k, v in os.environ.items() if k != TAG_VARIABLE}
    if tag is not None:
        env[TAG_VARIABLE] = tag
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60, cwd="/", env=env)


def assert_compose_valid(folder: Path) -> dict:
    """`docker-compose config -q` passes and the file matches the compose spec; returns the file."""
    checked = docker_compose(folder, "config", "-q")
    assert checked.returncode == 0, checked.stderr
    if not COMPOSE_SCHEMA.is_file():
        pytest.fail(f"{COMPOSE_SCHEMA} is missing: apt-get install docker-compose")
    compose = yaml.safe_load((folder / COMPOSE_FILE).read_text())
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft201909Validator(schema).iter_errors(compose)]
    assert errors == [], errors
    return compose


def rich_overrides(workers: int = 3) -> dict:
    return {
        "models": {
            "default": "cloud",
            "providers": {
                "cloud": {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "api_base": "https://api.openai.com/v1",
                    "api_key": "${env:OPENAI_API_KEY}",
                }
            },
        },
        "limits": {"concurrency": {"workers": workers}, "timeouts": {"request_seconds": 45.5}},
        "monitoring": {
            "prometheus": {"enabled": True},
            "alertmanager": {"enabled": True},
            "grafana": {"enabled": True, "admin_password": "${env:GRAFANA_PASSWORD}"},
            "logging": {"elk": {"enabled": True}},
        },
        "deploy": {"hosts": [{"name": "local", "connection": "local", "roles": ["engine", "edge", "monitoring"]}]},
    }


@pytest.fixture
def rich(make_target, write_files, tmp_path):
    """The rich spec rendered and written with its secret files; (target, folder, compose dict)."""
    target = make_target(rich_overrides())
    assert set(secret_refs(target.spec)) == set(FAKE)
    folder = write_files(tmp_path / "compose", {**render(target), **secret_files(target, FAKE)})
    return target, folder, assert_compose_valid(folder)


def test_default_spec_is_valid_for_docker_compose_and_the_compose_schema(make_target, write_files, tmp_path):
    folder = write_files(tmp_path / "compose", render(make_target()))
    compose = assert_compose_valid(folder)
    assert set(compose["services"]) == {"pod", "engine", "nginx"}
    assert "secrets" not in compose
    assert compose["services"]["pod"]["ports"] == ["8080:8080"]


def test_rich_spec_runs_every_service_with_a_restart_policy(rich):
    _, _, compose = rich
    services = compose["services"]
    assert set(services) == {"pod", "engine", "nginx", *MONITORING_SERVICES} | ELK_SERVICES
    assert {s["restart"] for s in services.values()} == {"unless-stopped"}
    assert "ports" in services["pod"] and not any("ports" in s for name, s in services.items() if name != "pod")


def test_only_the_engine_and_nginx_share_the_pod_namespace_the_rest_have_networks_of_their_own(rich):
    _, _, compose = rich
    services = compose["services"]
    # The engine on loopback behind its nginx, in a namespace held by a container that never crashes.
    assert {name for name, s in services.items() if s.get("network_mode") == "service:pod"} == {"engine", "nginx"}
    joined = {name: set(s.get("networks", ())) for name, s in services.items() if "network_mode" not in s}
    assert joined == {
        "pod": {"default", "monitoring"},
        **{name: {"monitoring"} for name in MONITORING_SERVICES},
        **{name: {"logging"} for name in ELK_SERVICES},
    }
    assert services["pod"]["networks"]["monitoring"] == {"aliases": ["nginx"]}
    assert compose["networks"]["monitoring"] == {"ipam": {"config": [{"subnet": MONITORING_SUBNET}]}}
    # Listening beyond loopback is what lets the others reach them on the monitoring network.
    assert "--web.listen-address=:9090" in services["prometheus"]["command"]
    assert "--web.listen-address=:9093" in services["alertmanager"]["command"]


def test_monitoring_reaches_the_engine_through_nginx_and_each_other_by_service_name(rich):
    _, folder, compose = rich
    config = yaml.safe_load((folder / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for g in job["static_configs"] for t in g["targets"]] for job in config["scrape_configs"]
    }
    assert targets == {"engine": ["nginx:8080"], "node": ["node-exporter:9100"]}
    managers = [t for m in config["alerting"]["alertmanagers"] for g in m["static_configs"] for t in g["targets"]]
    assert managers == ["alertmanager:9093"]
    datasources = yaml.safe_load((folder / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert [d["url"] for d in datasources["datasources"]] == ["http://prometheus:9090"]
    # nginx's metrics location and the engine (which believes nginx's X-Forwarded-For) admit the subnet.
    site = (folder / "nginx" / "site.conf").read_text()
    assert f'allow "{MONITORING_SUBNET}";' in site or f"allow {MONITORING_SUBNET};" in site
    settings = json.loads((folder / "engine" / "settings.json").read_text())
    assert MONITORING_SUBNET in settings["security"]["metrics_allow_networks"]
    checked = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(folder / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_node_exporter_reads_the_docker_hosts_proc_sys_and_disks_read_only(rich):
    _, _, compose = rich
    exporter = compose["services"]["node-exporter"]
    assert exporter["volumes"] == ["/proc:/host/proc:ro", "/sys:/host/sys:ro", "/:/host/root:ro"]
    assert {"--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/host/root"} <= set(
        exporter["command"]
    )
    assert exporter["healthcheck"]["test"][-1] == "http://127.0.0.1:9100/metrics"


def test_elk_reaches_logstash_and_the_local_elasticsearch_by_service_name(rich):
    _, folder, compose = rich
    filebeat = yaml.safe_load((folder / "elk" / "filebeat.yml").read_text())
    assert filebeat["output.logstash"]["hosts"] == ["logstash:5044"]
    pipeline = next(folder.glob("elk/logstash/**/*.conf")).read_text()
    assert '"http://elasticsearch:9200"' in pipeline and "127.0.0.1" not in pipeline
    assert compose["services"]["elasticsearch"]["environment"]["network.host"] == "0.0.0.0"


def test_healthchecks_gate_the_services_that_wait_on_others(rich):
    _, _, compose = rich
    services = compose["services"]
    probed = {name for name, s in services.items() if "healthcheck" in s}
    assert probed == {"engine", "nginx", *MONITORING_SERVICES, "elasticsearch"}
    assert "http://127.0.0.1:8081/health" in " ".join(services["engine"]["healthcheck"]["test"])
    assert services["nginx"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8080/health"
    assert services["engine"]["healthcheck"]["test"][:2] == ["CMD", "curl"]
    assert services["prometheus"]["healthcheck"]["test"][-1] == "http://127.0.0.1:9090/-/healthy"
    for waiting, on in (("nginx", "engine"), ("logstash", "elasticsearch"), ("kibana", "elasticsearch")):
        assert services[waiting]["depends_on"] == {on: {"condition": "service_healthy"}}


def test_history_and_logs_live_in_named_volumes_the_engine_settings_name(rich):
    _, folder, compose = rich
    services = compose["services"]
    assert {"data", "logs"} <= set(compose["volumes"])
    settings = json.loads((folder / "engine" / "settings.json").read_text())
    assert f"data:{settings['data_dir']}" in services["engine"]["volumes"]
    assert f"logs:{settings['log_dir']}" in services["engine"]["volumes"]
    assert f"logs:{ROOT}/logs" in services["nginx"]["volumes"]
    assert f"logs:{ROOT}/logs:ro" in services["filebeat"]["volumes"]
    # Every rendered config is bind-mounted read-only where the reused configs expect it.
    binds = [v for s in services.values() for v in s.get("volumes", []) if v.startswith("./")]
    assert binds and all(v.endswith(":ro") and (folder / v.split(":")[0]).is_file() for v in binds)


def test_secrets_are_compose_secrets_and_their_values_appear_nowhere_else(rich):
    _, folder, compose = rich
    text = (folder / COMPOSE_FILE).read_text()
    rendered = "".join(p.read_text() for p in folder.rglob("*") if p.is_file() and "secrets" not in p.parts)
    for value in FAKE.values():
        assert value not in text and value not in rendered
    assert all("environment" not in s or not set(FAKE) & set(s["environment"]) for s in compose["services"].values())
    targets = {s["source"]: s["target"] for service in compose["services"].values() for s in service.get("secrets", [])}
    assert set(targets) == set(compose["secrets"])
    for name, declared in compose["secrets"].items():
        assert (folder / declared["file"]).is_file(), name
    # The mounts land exactly where the reused configs read their secrets.
    settings = json.loads((folder / "engine" / "settings.json").read_text())
    assert targets["engine-secrets.json"] == settings["secrets_file"]
    secret = (folder / compose["secrets"]["engine-secrets.json"]["file"]).read_text()
    assert json.loads(secret) == {"models.providers.cloud.api_key": FAKE["models.providers.cloud.api_key"]}
    grafana_target = targets["grafana-secrets-monitoring.grafana.admin_password"]
    assert f"$__file{{{grafana_target}}}" in (folder / "grafana" / "grafana.ini").read_text()


def test_engine_limits_follow_the_spec(make_target, write_files, tmp_path):
    for workers in (1, 4):
        target = make_target(rich_overrides(workers))
        folder = write_files(tmp_path / f"w{workers}", {**render(target), **secret_files(target, FAKE)})
        engine = assert_compose_valid(folder)["services"]["engine"]
        assert engine["cpus"] == float(workers)
        assert engine["mem_limit"] == f"{256 + 256 * workers}m"
        assert engine["stop_grace_period"] == f"{46 + ENGINE_STOP_GRACE_SECONDS}s"


def test_elk_runs_only_behind_its_profile(rich, make_target):
    _, _, compose = rich
    profiled = {name for name, s in compose["services"].items() if s.get("profiles")}
    assert profiled == ELK_SERVICES
    assert {tuple(compose["services"][name]["profiles"]) for name in profiled} == {("elk",)}
    without = yaml.safe_load(
        render(make_target({"monitoring": {"logging": {"elk": {"enabled": False}}}}))[COMPOSE_FILE]
    )
    assert not ELK_SERVICES & set(without["services"])


def test_a_dollar_in_a_path_stays_literal(make_target, write_files, tmp_path):
    root = tmp_path / "r$HOME${x}"
    tls = {"security": {"tls": {"enabled": True, "certificate": "tls/cert.pem", "key": "tls/key.pem"}}}
    folder = write_files(tmp_path / "compose", render(make_target(tls, root=root)))
    assert_compose_valid(folder)
    resolved = docker_compose(folder, "config")
    assert resolved.returncode == 0, resolved.stderr
    nginx = yaml.safe_load(resolved.stdout)["services"]["nginx"]
    sources = [v["source"] if isinstance(v, dict) else v.split(":")[0] for v in nginx["volumes"]]
    assert f"{root}/tls/cert.pem" in sources


def test_check_validates_the_staged_folder_without_secret_values(make_target, write_files, tmp_path):
    target = make_target(rich_overrides())
    folder = write_files(tmp_path / "staged", render(target))  # no secrets/: render --check has none
    command = RENDERER.check.replace("{dir}", str(folder)).split()
    assert command[0] == "docker-compose"
    env = {**os.environ, TAG_VARIABLE: "t1"}
    assert subprocess.run(command, check=False, capture_output=True, cwd=tmp_path, env=env).returncode == 0
    (folder / COMPOSE_FILE).write_text((folder / COMPOSE_FILE).read_text().replace("mem_limit:", "mem_limitz:"))
    assert subprocess.run(command, check=False, capture_output=True, cwd=tmp_path, env=env).returncode != 0


def test_render_check_runs_docker_compose(make_target):
    results = run_checks(make_target(rich_overrides()), only={"compose"})
    assert [(r.folder, r.status, r.output) for r in results] == [("compose", "passed", "")]


def test_render_check_says_what_it_checked_for_compose_and_no_more(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    result = assistantctl(spec, "render", "--check", "--only", "compose")
    assert result.returncode == 0, result.stderr
    assert "check compose: config valid (docker-compose config); images not built, stack not started" in result.stdout
    assert "compose: passed" not in result.stdout


def test_built_images_take_the_runtime_tag_from_env_and_refuse_to_run_without_it(make_target, write_files, tmp_path):
    folder = write_files(
        tmp_path / "compose",
        {**render(make_target(rich_overrides())), **secret_files(make_target(rich_overrides()), FAKE)},
    )
    images = {
        name: s["image"]
        for name, s in yaml.safe_load(docker_compose(folder, "config", tag="abc123").stdout)["services"].items()
    }
    for service in ("pod", "engine", "nginx", "prometheus", "alertmanager", "node-exporter"):
        expected = "assistantctl/base:abc123" if service == "pod" else f"assistantctl/{service}:abc123"
        assert images[service] == expected
    assert not images["grafana"].startswith("assistantctl/")  # no Debian package: the vendor's image
    unbuilt = docker_compose(folder, "config", "-q", tag=None)
    assert unbuilt.returncode != 0 and "assistantctl compose --build" in unbuilt.stderr


def test_kibana_reads_the_elasticsearch_logstash_writes_to(make_target, write_files, tmp_path):
    external = rich_overrides()
    external["monitoring"]["logging"]["elk"]["elasticsearch_hosts"] = ["https://es.example.net:9200"]
    folder = write_files(
        tmp_path / "external", {**render(make_target(external)), **secret_files(make_target(external), FAKE)}
    )
    services = assert_compose_valid(folder)["services"]
    assert "elasticsearch" not in services
    assert json.loads(services["kibana"]["environment"]["ELASTICSEARCH_HOSTS"]) == ["https://es.example.net:9200"]
    pipeline = next(folder.glob("elk/logstash/**/*.conf")).read_text()
    assert "https://es.example.net:9200" in pipeline
    local = assert_compose_valid(
        write_files(
            tmp_path / "local",
            {**render(make_target(rich_overrides())), **secret_files(make_target(rich_overrides()), FAKE)},
        )
    )
    assert json.loads(local["services"]["kibana"]["environment"]["ELASTICSEARCH_HOSTS"]) == [
        "http://elasticsearch:9200"
    ]
    assert "elasticsearch" in local["services"]


def test_rendering_is_deterministic_and_never_shipped(make_target):
    assert render(make_target(rich_overrides())) == render(make_target(rich_overrides()))
    assert RENDERER.shipped is False
