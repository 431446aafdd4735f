"""renderers/kubernetes against the Kubernetes API's own JSON schemas (kubernetes-validate, offline,
strict) and kustomize (`kubectl kustomize`, offline): the default and production specs render valid
manifests, `render --check` says what it checked, and each object is what the spec asks for.
No cluster runs here: nothing is applied."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from addresses import machine_address
from assistantctl import kubernetes_check
from assistantctl.checks import _run, run_checks
from assistantctl.engine.settings import EngineSettings, load_secrets
from assistantctl.renderers import Target
from assistantctl.renderers.kubernetes import RENDERER, render
from assistantctl.renderers.kubernetes.workload import _ASSEMBLE
from assistantctl.schema.loader import SpecError, load_spec
from cli_helpers import REPO, assistantctl, default_spec, free_port, write_spec
from processes import stop_process

PRODUCTION = REPO / "examples" / "production.yaml"


def target_of(path: Path) -> Target:
    spec = load_spec(path)
    return Target(spec=spec, host=spec.deploy.hosts[0], root="/opt/x", python=sys.executable)


def objects(target: Target) -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in render(target).items()}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is not installed (these tests use its offline `kustomize`)")
    return found


# Everything the kubernetes section can add: external PostgreSQL by name and Redis by address.
EXTERNAL = {
    "namespace": "chat-prod",
    "image": "registry.example.com/assistantctl/engine:0123456789ab",
    "min_replicas": 3,
    "ingress": {"class_name": "nginx", "tls_secret": "chat-tls"},
    "postgres": {"address": "db.example.com", "port": 5432},
    "redis": {"address": "10.0.0.50", "port": 6379},
}


@pytest.mark.parametrize(
    ("spec", "kubernetes", "count"),
    [(REPO / "assistant.yaml", None, 8), (PRODUCTION, None, 8), (PRODUCTION, EXTERNAL, 11)],
    ids=["default", "production", "production-external-state"],
)
def test_render_check_validates_the_manifests_against_the_kubernetes_schemas(spec, kubernetes, count, tmp_path):
    if kubernetes:
        data = yaml.safe_load(spec.read_text())
        spec = write_spec(tmp_path, {**data, "kubernetes": kubernetes})
    [result] = run_checks(target_of(spec), only={"kubernetes"})
    assert result.status == "passed", result.output
    assert (
        result.summary
        == f"schema valid (kubernetes-validate 1.37.0, strict, Kubernetes 1.30 and 1.37): {count} objects"
    )


def test_the_cli_prints_what_the_kubernetes_check_covered(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    result = assistantctl(spec, "render", "--check", "--only", "kubernetes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check kubernetes: schema valid (kubernetes-validate" in result.stdout


def test_an_unknown_field_or_api_version_fails_the_check(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    overrides = tmp_path / "overrides" / "kubernetes"
    overrides.mkdir(parents=True)
    (overrides / "pdb.yaml").write_text(yaml.safe_dump({"spec": {"maxUnavailabel": 1}}))
    (overrides / "hpa.yaml").write_text(yaml.safe_dump({"apiVersion": "autoscaling/v9"}))
    result = assistantctl(spec, "render", "--check", "--only", "kubernetes")
    assert result.returncode == 1
    assert "check kubernetes: failed" in result.stdout
    assert "pdb.yaml" in result.stdout and "maxUnavailabel" in result.stdout
    # kubernetes-validate's own CLI only warns about a kind it has no schema for; this check fails.
    assert "hpa.yaml" in result.stdout and "autoscaling/v9" in result.stdout


def test_a_python_validator_that_is_not_installed_is_reported_missing(tmp_path):
    template = "{python} -c 'import sys; print(\"kubernetes-validate is not installed here\"); sys.exit(127)'"
    result = _run("kubernetes", template, tmp_path, tmp_path)
    assert (result.status, result.program) == ("missing", "kubernetes-validate")


def test_the_validator_exits_127_without_kubernetes_validate(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kubernetes_validate", None)  # import fails as if not installed
    assert kubernetes_check.main(["x", "/nonexistent"]) == kubernetes_check.MISSING_EXIT
    assert "kubernetes-validate is not installed" in capsys.readouterr().out


def test_the_manifests_build_with_kustomize_and_apply_the_namespace_first(tmp_path):
    folder = tmp_path / "k"
    folder.mkdir()
    for name, text in render(target_of(REPO / "assistant.yaml")).items():
        (folder / name).write_text(text)
    command = [kubectl(), "kustomize", str(folder)]
    built = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(built.stdout)]
    assert kinds[0] == "Namespace"
    assert sorted(kinds) == sorted(
        ["Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
        + ["Ingress", "NetworkPolicy"]
    )


def test_the_engine_runs_as_a_deployment_probed_on_ready_and_health(make_target):
    deployment = objects(make_target())["deployment.yaml"]
    [engine] = deployment["spec"]["template"]["spec"]["containers"]
    assert engine["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8081}
    assert engine["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8081}
    assert engine["image"].startswith("assistantctl/engine:")
    assert engine["securityContext"]["readOnlyRootFilesystem"] is True
    # The routes the probes name are the engine's own.
    paths = json.loads((REPO / "engine" / "api" / "openapi.json").read_text())["paths"]
    assert {"/ready", "/health"} <= set(paths)


def test_the_configmap_carries_the_engine_settings_for_a_pod(make_target):
    target = make_target({"security": {"edge_secret": "${env:EDGE_SECRET}"}})
    config = objects(target)["configmap.yaml"]
    settings = EngineSettings.model_validate_json(config["data"]["settings.json"])
    assert settings.listen_host == "0.0.0.0" and settings.listen_port == 8081
    assert settings.data_dir == "/srv/assistant/data"
    # The Ingress controller is the pod's peer: no edge address list, no edge secret to hold.
    assert settings.security.edge_addresses == [] and settings.security.edge_secret is None
    assert settings.secrets_file is None  # the edge secret was its only secret: nothing to mount
    deployment = objects(target)["deployment.yaml"]
    digest = deployment["spec"]["template"]["metadata"]["annotations"]["assistantctl/settings-sha256"]
    changed = objects(make_target({"limits": {"max_message_chars": 999}}))["deployment.yaml"]
    assert changed["spec"]["template"]["metadata"]["annotations"]["assistantctl/settings-sha256"] != digest


def test_the_pods_believe_the_forwarded_address_of_the_ingress_networks_only(make_target):
    plain = EngineSettings.model_validate_json(objects(make_target())["configmap.yaml"]["data"]["settings.json"])
    assert plain.security.trusted_proxies == []
    target = make_target({"kubernetes": {"ingress": {"trusted_networks": ["10.244.0.0/16", "fd00:10:244::/56"]}}})
    settings = EngineSettings.model_validate_json(objects(target)["configmap.yaml"]["data"]["settings.json"])
    assert settings.security.trusted_proxies == ["10.244.0.0/16", "fd00:10:244::/56"]
    with pytest.raises(SpecError, match="trusted_networks"):
        make_target({"kubernetes": {"ingress": {"trusted_networks": ["10.244.0.0/16 ; allow all"]}}})


def test_sqlite_history_keeps_one_replica_and_shared_state_lets_the_hpa_scale(make_target):
    local = objects(make_target())
    assert (local["hpa.yaml"]["spec"]["minReplicas"], local["hpa.yaml"]["spec"]["maxReplicas"]) == (1, 1)
    shared = objects(
        make_target(
            {
                "deploy": {"state": {"history": "postgres", "postgres_dsn": "${env:POSTGRES_DSN}"}},
                "kubernetes": {"min_replicas": 3, "max_replicas": 12, "cpu_target_percent": 60},
            }
        )
    )
    hpa = shared["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert hpa["scaleTargetRef"]["name"] == shared["deployment.yaml"]["metadata"]["name"]
    assert shared["pdb.yaml"]["spec"]["maxUnavailable"] == 1


def test_the_ingress_keeps_websockets_and_sse_open_and_unbuffered(make_target):
    target = make_target(
        {
            "channels": {"websocket": {"heartbeat_seconds": 200}},
            "limits": {"max_body_kilobytes": 2048},
            "security": {"tls": {"enabled": True, "certificate": "/c.pem", "key": "/k.pem"}},
            "deploy": {"server_name": "chat.example.com"},
        }
    )
    ingress = objects(target)["ingress.yaml"]
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "600"  # three missed pings
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "2048k"
    assert ingress["spec"]["rules"][0]["host"] == "chat.example.com"
    # TLS in the spec: the certificate is a Secret by the documented name, never a file's content.
    assert ingress["spec"]["tls"] == [{"secretName": "assistant-tls", "hosts": ["chat.example.com"]}]


def test_secrets_are_references_to_one_existing_secret_never_values(make_target, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-FAKE-NEVER-RENDERED")
    target = make_target(
        {
            "models": {
                "providers": {"cloud": {"provider": "openai", "model": "m", "api_key": "${env:OPENAI_API_KEY}"}}
            },
            "security": {"history_encryption": {"enabled": True, "key": "${file:/etc/assistant/history.key}"}},
        }
    )
    files = render(target)
    assert "sk-FAKE" not in "".join(files.values())
    assert not any(yaml.safe_load(text)["kind"] == "Secret" for text in files.values())
    pod = yaml.safe_load(files["deployment.yaml"])["spec"]["template"]["spec"]
    refs = next(v for v in pod["volumes"] if v["name"] == "secret-refs")["secret"]
    assert refs["secretName"] == "assistant-secrets"
    assert {item["key"]: item["path"] for item in refs["items"]} == {
        "OPENAI_API_KEY": "models.providers.cloud.api_key",
        "history.key": "security.history_encryption.key",  # kubectl create secret --from-file's key
    }
    assert [c["name"] for c in pod["initContainers"]] == ["secrets"]


def test_the_init_container_turns_the_mounted_keys_into_the_engines_secrets_file(tmp_path):
    """The init container's script, run as the kubelet lays out a Secret volume (`..data` links)."""
    mounted = tmp_path / "refs"
    data = tmp_path / "refs" / "..2026_12_02"
    data.mkdir(parents=True)
    (data / "models.providers.cloud.api_key").write_text("sk-one\n")
    (mounted / "..data").symlink_to(data.name)
    (mounted / "models.providers.cloud.api_key").symlink_to("..data/models.providers.cloud.api_key")
    out = tmp_path / "secrets.json"
    subprocess.run([sys.executable, "-c", _ASSEMBLE, str(mounted), str(out)], check=True, timeout=30)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rendered = json.loads(objects(target_of(REPO / "assistant.yaml"))["configmap.yaml"]["data"]["settings.json"])
    settings = EngineSettings.model_validate({**rendered, "secrets_file": str(out)})
    assert load_secrets(settings) == {"models.providers.cloud.api_key": "sk-one"}


def test_external_postgres_and_redis_become_services_and_egress_rules(make_target):
    target = make_target(
        {
            "deploy": {
                "state": {
                    "history": "postgres",
                    "postgres_dsn": "${env:POSTGRES_DSN}",
                    "rate_limits": "redis",
                    "redis_url": "${env:REDIS_URL}",
                }
            },
            "kubernetes": {
                "postgres": {"address": "db.example.com", "port": 5433},
                "redis": {"address": "10.0.0.50", "port": 6380},
            },
        }
    )
    found = objects(target)
    assert found["postgres-service.yaml"]["spec"] == {
        "type": "ExternalName",
        "externalName": "db.example.com",
        "ports": [{"name": "postgres", "port": 5433, "protocol": "TCP"}],
    }
    assert "selector" not in found["redis-service.yaml"]["spec"]
    assert found["redis-endpointslice.yaml"]["endpoints"] == [{"addresses": ["10.0.0.50"]}]
    egress = found["networkpolicy.yaml"]["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 5433}]} in egress
    assert {"ports": [{"protocol": "TCP", "port": 6380}], "to": [{"ipBlock": {"cidr": "10.0.0.50/32"}}]} in egress
    ingress_from = found["networkpolicy.yaml"]["spec"]["ingress"][0]["from"]
    assert ingress_from == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]


def test_the_kubernetes_manifests_are_rendered_once_and_never_shipped(make_target):
    assert RENDERER.shipped is False
    assert RENDERER.applies(make_target()) is True


@pytest.mark.parametrize(
    ("server_name", "host"),
    [("Chat.Example.COM", "chat.example.com"), ("*.example.com", "*.example.com"), ("10.0.0.10", None)],
)
def test_the_ingress_host_is_a_lowercase_dns_name_or_none(make_target, server_name, host):
    """The API server refuses an Ingress host with capitals or an IP address (the schemas do not)."""
    rule = objects(make_target({"deploy": {"server_name": server_name}}))["ingress.yaml"]["spec"]["rules"][0]
    assert rule.get("host") == host


def test_an_external_service_name_is_lowercase(make_target):
    target = make_target({"kubernetes": {"postgres": {"address": "DB.Example.com", "port": 5432}}})
    assert objects(target)["postgres-service.yaml"]["spec"]["externalName"] == "db.example.com"


def test_the_pods_engine_answers_the_kubelets_probes_from_another_address(make_target, tmp_path):
    """A real engine on the ConfigMap's settings and the init container's secrets.json, reached from
    this machine's non-loopback address as the kubelet and the ingress controller reach a pod: the
    probes answer, and a request without credentials is asked for them (401), not refused as a
    stranger to an edge (the spec has an edge secret; in a pod the NetworkPolicy does that job)."""
    target = make_target(
        {
            "security": {
                "edge_secret": "${env:EDGE_SECRET}",
                "jwt": {"enabled": True, "secret": "${env:JWT_SECRET}"},
            },
        }
    )
    found = objects(target)
    volumes = found["deployment.yaml"]["spec"]["template"]["spec"]["volumes"]
    items = next(v for v in volumes if v["name"] == "secret-refs")["secret"]["items"]
    assert {item["key"] for item in items} == {"JWT_SECRET"}  # the edge secret is not asked for
    mounted = tmp_path / "secret-refs"
    mounted.mkdir()
    for item in items:
        (mounted / item["path"]).write_text("a-jwt-secret-of-at-least-32-bytes-length\n")
    root, port = tmp_path / "pod", free_port()
    text = found["configmap.yaml"]["data"]["settings.json"].replace("/srv/assistant", str(root))
    text = text.replace("/run/assistant/secrets", str(root / "secrets"))
    settings = EngineSettings.model_validate_json(text).model_copy(update={"listen_port": port})
    (root / "secrets").mkdir(parents=True)
    subprocess.run([sys.executable, "-c", _ASSEMBLE, str(mounted), settings.secrets_file], check=True, timeout=30)
    with pod_engine(settings, root, f"http://{machine_address()}:{port}") as url:
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        chat = httpx.post(f"{url}/api/v1/chat", json={"message": "hello"}, timeout=5)
        assert chat.status_code == 401, chat.text


@contextmanager
def pod_engine(settings: EngineSettings, root: Path, url: str) -> Iterator[str]:
    """A real engine on `settings` (paths already moved under `root`), once `url` says it is ready."""
    settings_path = root / "settings.json"
    settings_path.write_text(settings.to_json())
    with open(root / "stderr.log", "wb") as stderr:
        engine = subprocess.Popen(
            [sys.executable, "-m", "assistantctl.engine", "--settings", str(settings_path)], stderr=stderr
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert engine.poll() is None, (root / "stderr.log").read_text()
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the engine never became ready"
            time.sleep(0.1)
        yield url
    finally:
        stop_process(engine)


def test_the_pods_get_the_skill_folders_and_adapter_modules_a_host_release_holds(tmp_path):
    """The code ConfigMap laid out as its volumes' items say, where the pod mounts them: a real
    engine on the ConfigMap's settings answers a skill's command and an adapter's question."""
    shutil.copytree(REPO / "examples" / "skills" / "word_count", tmp_path / "skills" / "word_count")
    shutil.copy(REPO / "examples" / "adapters" / "faq_adapter.py", tmp_path)
    data = default_spec()
    data["models"] = yaml.safe_load((REPO / "examples" / "adapters" / "assistant.yaml").read_text())["models"]
    data["tools"] = {"skill_folders": ["skills/word_count"]}
    found = objects(target_of(write_spec(tmp_path, data)))
    code, name = found["code.yaml"]["data"], found["code.yaml"]["metadata"]["name"]
    assert found["code.yaml"]["immutable"] is True and name.startswith("assistant-engine-code-")
    pod = found["deployment.yaml"]["spec"]["template"]["spec"]
    [engine] = pod["containers"]
    root, port = tmp_path / "pod", free_port()
    for mount in engine["volumeMounts"]:
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        if volume.get("configMap", {}).get("name") == name:
            for item in volume["configMap"]["items"]:
                path = root / mount["mountPath"].removeprefix("/srv/assistant/") / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(code[item["key"]])
    assert (root / "current" / "adapters" / "faq_adapter.py").is_file()
    assert (root / "current" / "skills" / "word_count" / "handler.py").is_file()
    text = found["configmap.yaml"]["data"]["settings.json"].replace("/srv/assistant", str(root))
    update = {"listen_host": "127.0.0.1", "listen_port": port}
    settings = EngineSettings.model_validate_json(text).model_copy(update=update)
    with pod_engine(settings, root, f"http://127.0.0.1:{port}") as url:
        words = httpx.post(f"{url}/api/v1/chat", json={"message": "/words one two three"}, timeout=10)
        faq = httpx.post(f"{url}/api/v1/chat", json={"message": "where is the office?"}, timeout=10)
    assert (words.json()["reply"], words.json()["model"]) == ("3 words", "skill:word_count")
    assert (faq.json()["reply"], faq.json()["model"]) == ("At 1 Example Street, second floor.", "faq")


def test_a_cpu_request_above_its_limit_is_refused_and_lifts_a_derived_limit(make_target):
    with pytest.raises(SpecError, match="cpu_request_millicores"):
        make_target({"kubernetes": {"resources": {"cpu_request_millicores": 3000, "cpu_limit_millicores": 1000}}})
    target = make_target({"kubernetes": {"resources": {"cpu_request_millicores": 5000}}})  # 2 workers
    [engine] = objects(target)["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    assert engine["resources"]["requests"]["cpu"] == "5000m" and engine["resources"]["limits"]["cpu"] == "5000m"


def code_spec(folder: Path, notes: str) -> Target:
    """The example skill folder with a `notes.txt` holding `notes`, in a spec in `folder`."""
    shutil.copytree(REPO / "examples" / "skills" / "word_count", folder / "skills" / "word_count")
    (folder / "skills" / "word_count" / "notes.txt").write_text(notes, encoding="utf-8")
    data = default_spec()
    data["tools"] = {"skill_folders": ["skills/word_count"]}
    return target_of(write_spec(folder, data))


def test_a_shipped_file_reads_back_from_the_configmap_as_it_was_written(tmp_path):
    notes = "caf\x85 au lait\nline\u2028separator and\u2029paragraph\n  indented\n"
    files = render(code_spec(tmp_path, notes))
    data = yaml.safe_load(files["code.yaml"])["data"]
    assert notes in data.values()
    assert sorted(data.values()) == sorted(
        (tmp_path / "skills" / "word_count" / name).read_text(encoding="utf-8")
        for name in ("config.yaml", "handler.py", "notes.txt")
    )


def test_code_over_what_a_cluster_stores_fails_the_check(tmp_path):
    target = code_spec(tmp_path, "x" * 900_000 + "\n")
    assert [r.status for r in run_checks(target, only={"kubernetes"})] == ["passed"]
    shutil.copytree(tmp_path / "skills" / "word_count", tmp_path / "skills" / "word_total")
    (tmp_path / "skills" / "word_total" / "config.yaml").write_text(
        (tmp_path / "skills" / "word_total" / "config.yaml").read_text().replace("/words", "/total")
    )
    data = yaml.safe_load((tmp_path / "assistant.yaml").read_text())
    data["tools"]["skill_folders"].append("skills/word_total")
    (result,) = run_checks(target_of(write_spec(tmp_path, data)), only={"kubernetes"})
    assert result.status == "failed"
    assert "code.yaml: its data holds 1,80" in result.output and "over a cluster's 1,048,576" in result.output
