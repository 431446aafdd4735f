"""User overrides (overrides/<renderer>/<path>) merged over the rendered files, through the real CLI."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest
import yaml

from assistantctl.renderers.merge import OverrideError, deep_merge, merge_ini, merge_yaml
from cli_helpers import assistantctl, default_spec, write_spec

HELLO = 'location = /hello {\n    return 200 "hello";\n}\n'


def project(tmp_path: Path, files: dict[str, str], **deploy: object) -> Path:
    """A spec in tmp_path (local host, root under tmp_path) with `files` written under overrides/."""
    data = default_spec()
    data["deploy"].update({"root": str(tmp_path / "root"), **deploy})
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = write_spec(tmp_path, data)
    for path, text in files.items():
        target = tmp_path / "overrides" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return spec


def with_monitoring(spec: Path) -> Path:
    data = yaml.safe_load(spec.read_text())
    data["deploy"]["hosts"][0]["roles"] = ["engine", "edge", "monitoring"]
    data["monitoring"]["prometheus"] = {"enabled": True}
    return write_spec(spec.parent, data)


def rendered(spec: Path) -> Path:
    result = assistantctl(spec, "render", "--out", str(spec.parent / "out"))
    assert result.returncode == 0, result.stderr
    return spec.parent / "out" / "local"


def checked(spec: Path, only: str) -> str:
    result = assistantctl(spec, "render", "--check", "--only", only)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"check {only}: passed" in result.stdout, result.stdout
    return result.stdout


def test_yaml_override_merges_mappings_and_replaces_lists_and_prometheus_accepts_it(tmp_path):
    override = "global:\n  scrape_timeout: 7s\n  external_labels:\n    region: eu-1\nrule_files: [rules/alerts.yml]\n"
    spec = with_monitoring(project(tmp_path, {"prometheus/prometheus.yml": override}))
    config = yaml.safe_load((rendered(spec) / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["scrape_timeout"] == "7s"
    assert config["global"]["external_labels"] == {"assistant": "assistant", "region": "eu-1"}
    assert config["global"]["scrape_interval"] == "15s", "keys the override does not name stay"
    assert config["rule_files"] == ["rules/alerts.yml"], "a list replaces, it does not append"
    assert [job["job_name"] for job in config["scrape_configs"]] == ["engine", "node"]
    checked(spec, "prometheus")


def test_json_override_reaches_the_engine_settings_and_is_validated_by_the_engine(tmp_path):
    spec = project(tmp_path, {"engine/settings.json": '{"breaker_failure_threshold": 9}'})
    settings = json.loads((rendered(spec) / "engine" / "settings.json").read_text())
    assert settings["breaker_failure_threshold"] == 9
    assert settings["listen_port"] == 8081
    checked(spec, "engine")

    (tmp_path / "overrides" / "engine" / "settings.json").write_text('{"workers": "many"}')
    result = assistantctl(spec, "render", "--check", "--only", "engine")
    assert result.returncode == 1
    assert "check engine: failed" in result.stdout


def test_ini_override_merges_key_by_key_and_supervisor_parses_it(tmp_path):
    override = "[program:engine]\nstartsecs = 9\numask=022\n\n[program:nginx]\nstopwaitsecs=45\n"
    spec = project(tmp_path, {"supervisor/programs/engine.conf": override, "supervisor/programs/nginx.conf": override})
    bundle = rendered(spec)
    parser = configparser.RawConfigParser()
    parser.read(bundle / "supervisor" / "programs" / "engine.conf")
    engine = parser["program:engine"]
    assert engine["startsecs"] == "9" and engine["umask"] == "022"
    assert engine["autorestart"] == "true" and "assistantctl.engine" in engine["command"]
    text = (bundle / "supervisor" / "programs" / "engine.conf").read_text()
    assert text.count("startsecs") == 1, "the key is replaced where it was, not added twice"
    assert parser["program:nginx"]["stopwaitsecs"] == "45", "a section the file lacked is added"
    checked(spec, "supervisor")


def test_a_valid_nginx_snippet_is_shipped_included_and_passes_nginx_t(tmp_path):
    snippets = {"nginx/server.d/hello.conf": HELLO, "nginx/http.d/types.conf": "server_names_hash_bucket_size 128;\n"}
    spec = project(tmp_path, snippets)
    bundle = rendered(spec)
    assert (bundle / "nginx" / "server.d" / "hello.conf").read_text() == HELLO
    assert "include server.d/*.conf;" in (bundle / "nginx" / "site.conf").read_text()
    assert "include http.d/*.conf;" in (bundle / "nginx" / "nginx.conf").read_text()
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["files"]["nginx/server.d/hello.conf"]["service"] == "nginx"
    checked(spec, "nginx")


def test_an_invalid_nginx_snippet_is_reported_by_render_check(tmp_path):
    spec = project(tmp_path, {"nginx/server.d/broken.conf": "location = /x {\n    no_such_directive on;\n}\n"})
    result = assistantctl(spec, "render", "--check", "--only", "nginx")
    assert result.returncode == 1
    assert "check nginx: failed" in result.stdout
    assert "no_such_directive" in result.stdout


def test_without_snippets_nginx_has_no_include_hooks(tmp_path):
    bundle = rendered(project(tmp_path, {"supervisor/supervisord.conf": "[supervisord]\nminfds=2048\n"}))
    assert "include server.d" not in (bundle / "nginx" / "site.conf").read_text()
    assert "include http.d" not in (bundle / "nginx" / "nginx.conf").read_text()


def test_overrides_change_the_manifest_hashes_and_the_bundle_id(tmp_path):
    root = str(tmp_path / "root")  # the same deploy root, so only the override differs
    plain = rendered(project(tmp_path / "a", {}, root=root))
    overridden = rendered(
        project(tmp_path / "b", {"supervisor/programs/engine.conf": "[program:engine]\nstartsecs=9\n"}, root=root)
    )
    before, after = (json.loads((b / "MANIFEST.json").read_text()) for b in (plain, overridden))
    assert before["bundle_id"] != after["bundle_id"]
    changed = {p for p in before["files"] if before["files"][p]["sha256"] != after["files"][p]["sha256"]}
    assert changed == {"supervisor/programs/engine.conf"}


def test_plan_shows_snippets_and_refuses_an_override_that_cannot_apply(tmp_path):
    spec = project(tmp_path, {"nginx/server.d/hello.conf": HELLO})
    result = assistantctl(spec, "plan", "--json")
    assert result.returncode == 0, result.stderr
    changes = {c["path"]: c for c in json.loads(result.stdout)["hosts"][0]["changes"]}
    assert changes["nginx/server.d/hello.conf"]["action"] == "add"
    assert changes["nginx/server.d/hello.conf"]["service"] == "nginx"

    (tmp_path / "overrides" / "nginx" / "nginx.conf").write_text("worker_processes 1;\n")
    result = assistantctl(spec, "plan")
    assert result.returncode == 1
    assert "overrides/nginx/nginx.conf: nginx/nginx.conf has no structured merge" in result.stderr


def test_an_override_applies_on_the_hosts_that_render_its_file(tmp_path):
    spec = project(tmp_path, {"supervisor/programs/nginx.conf": "[program:nginx]\nstopwaitsecs=45\n"})
    data = yaml.safe_load(spec.read_text())
    data["deploy"]["hosts"].append({"name": "watch", "roles": ["monitoring"]})
    data["monitoring"]["prometheus"] = {"enabled": True}
    write_spec(tmp_path, data)
    result = assistantctl(spec, "render", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "stopwaitsecs=45" in (tmp_path / "out/local/supervisor/programs/nginx.conf").read_text()
    assert not (tmp_path / "out/watch/supervisor/programs/nginx.conf").exists()


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("nginx/mime.types", "types {}\n", "overrides/nginx/mime.types: matches no rendered file"),
        ("supervisor/programs/worker.conf", "[program:worker]\n", "matches no rendered file"),
        ("nginx/site.conf", "server {}\n", "overrides/nginx/site.conf: nginx/site.conf has no structured merge"),
        ("nginx/server.d/notes.txt", "hello\n", "overrides/nginx/server.d/notes.txt: only server.d/*.conf"),
        ("ngnix/server.d/a.conf", HELLO, "overrides/ngnix/: 'ngnix' is not a renderer"),
        ("prometheus/prometheus.yml", "global: {}\n", "overrides/prometheus/: no host of this spec renders"),
        ("engine/settings.json", "[1, 2]", "overrides/engine/settings.json: an override must be a mapping"),
        ("supervisor/supervisord.conf", "minfds=1\n", "overrides/supervisor/supervisord.conf:1: line sets a key"),
        ("README.md", "notes\n", "overrides/README.md: overrides go in a renderer's folder"),
    ],
)
def test_an_override_that_cannot_apply_is_an_error_naming_the_file(tmp_path, path, text, message):
    spec = project(tmp_path, {path: text})
    for command in (("render",), ("render", "--check")):
        result = assistantctl(spec, *command)
        assert result.returncode == 1, result.stdout
        assert message in result.stderr, result.stderr
    assert not (tmp_path / "root").exists()


def test_the_overrides_folder_is_configurable(tmp_path):
    spec = project(tmp_path, {}, overrides="site-config/overrides")
    folder = tmp_path / "site-config" / "overrides" / "nginx" / "server.d"
    folder.mkdir(parents=True)
    (folder / "hello.conf").write_text(HELLO)
    assert (rendered(spec) / "nginx" / "server.d" / "hello.conf").exists()
    (folder / "hello.txt").write_text(HELLO)
    result = assistantctl(spec, "render")
    assert result.returncode == 1 and "site-config/overrides/nginx/server.d/hello.txt" in result.stderr


def test_deep_merge_merges_mappings_and_replaces_everything_else():
    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": "x"}
    override = {"a": {"c": [3], "d": {"g": 2}, "b": None}, "f": {"now": "a mapping"}}
    assert deep_merge(base, override) == {"a": {"b": None, "c": [3], "d": {"e": 1, "g": 2}}, "f": {"now": "a mapping"}}
    assert base["a"]["d"] == {"e": 1}, "the rendered data is not modified in place"


def test_ini_merge_keeps_comments_and_continuation_lines():
    base = "; header\n[a]\nx = 1\nenv = A=1,\n    B=2\n; end of a\n\n[b]\ny = 2\n"
    merged = merge_ini(base, "[a]\nenv = C=3\nz = 4\n", "o/grafana/grafana.ini")
    assert merged == "; header\n[a]\nx = 1\nenv = C=3\nz = 4\n; end of a\n\n[b]\ny = 2\n"


def test_invalid_yaml_override_names_the_file():
    with pytest.raises(OverrideError, match=r"^o/prometheus/prometheus.yml: invalid YAML"):
        merge_yaml("a: 1\n", "a: [\n", "o/prometheus/prometheus.yml")
