"""The CLI's fast commands: validate, schema, render (determinism, --only, --check)."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import REPO, assistantctl, default_spec, write_spec


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_validate_accepts_the_default_spec():
    result = assistantctl(REPO / "assistant.yaml", "validate")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_a_spec_error_prints_file_line_column_and_touches_nothing(tmp_path):
    data = default_spec()
    data["limits"]["rate_limit"]["bursst"] = 5
    spec = write_spec(tmp_path, data)
    for command in ("validate", "render", "plan", "apply"):
        result = assistantctl(spec, command)
        assert result.returncode == 1, command
        assert f"{spec}:" in result.stderr and "did you mean 'burst'?" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["assistant.yaml"], "nothing may be created"


def test_a_missing_spec_file_is_a_clear_error(tmp_path):
    result = assistantctl(tmp_path / "nope.yaml", "validate")
    assert result.returncode == 1
    assert "nope.yaml: No such file or directory" in result.stderr


def test_render_is_byte_identical_for_the_same_spec(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    assert assistantctl(spec, "render", "--out", str(tmp_path / "a")).returncode == 0
    assert assistantctl(spec, "render", "--out", str(tmp_path / "b")).returncode == 0
    first, second = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert first == second
    assert {
        "local/MANIFEST.json",
        "local/engine/settings.json",
        "local/nginx/site.conf",
        "local/supervisor/programs/engine.conf",
    } <= set(first)


def test_the_manifest_names_hash_mode_and_owner_of_every_file(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    assistantctl(spec, "render", "--out", str(tmp_path / "out"))
    bundle = tmp_path / "out" / "local"
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    import hashlib

    files = {p for p in tree(bundle) if p != "MANIFEST.json"}
    assert set(manifest["files"]) == files
    for path, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((bundle / path).read_bytes()).hexdigest()
        assert entry["mode"] == "0644" and entry["service"]


def test_render_only_limits_the_targets_and_rejects_unknown_ones(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    result = assistantctl(spec, "render", "--only", "nginx")
    assert result.returncode == 0
    assert "nginx/site.conf" in result.stdout and "engine/settings.json" not in result.stdout
    bad = assistantctl(spec, "render", "--only", "nginxx")
    assert bad.returncode == 2 and "unknown renderer(s): nginxx" in bad.stderr


def test_render_check_runs_each_services_own_validator(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    result = assistantctl(spec, "render", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    for folder in ("engine", "nginx", "supervisor"):
        assert f"check {folder}: passed" in result.stdout


def test_render_check_fails_when_nginx_rejects_the_config(tmp_path):
    data = default_spec()
    data["security"]["tls"] = {
        "enabled": True,
        "certificate": str(tmp_path / "missing.crt"),
        "key": str(tmp_path / "missing.key"),
    }
    spec = write_spec(tmp_path, data)
    result = assistantctl(spec, "render", "--check")
    assert result.returncode == 1
    assert "check nginx: failed" in result.stdout and "missing.crt" in result.stdout


def test_the_schema_command_prints_the_committed_schema():
    result = assistantctl(REPO / "assistant.yaml", "schema")
    assert result.stdout == (REPO / "schema" / "assistant.schema.json").read_text()


def test_render_check_fails_when_a_validator_is_missing_unless_allowed(tmp_path):
    spec = write_spec(tmp_path, default_spec())
    empty = tmp_path / "bin"
    empty.mkdir()
    result = assistantctl(spec, "render", "--check", env={"PATH": str(empty)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "check nginx: missing" in result.stdout and "check compose: missing" in result.stdout
    assert "validators missing: compose (docker-compose), nginx (nginx)" in result.stderr
    assert "--allow-missing" in result.stderr
    allowed = assistantctl(spec, "render", "--check", "--allow-missing", env={"PATH": str(empty)})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "check nginx: missing" in allowed.stdout and "check engine: passed" in allowed.stdout


def test_render_check_runs_the_python_validators_for_ssh_hosts_on_the_controller(tmp_path):
    data = default_spec()
    # An unroutable address and an interpreter that exists only on that host: nothing is contacted.
    data["deploy"]["hosts"] = [
        {"name": "remote", "address": "192.0.2.10", "connection": "ssh", "python": "/opt/nowhere/bin/python3"}
    ]
    spec = write_spec(tmp_path, data)
    result = assistantctl(spec, "render", "--check", "--only", "engine,supervisor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check engine: passed" in result.stdout and "check supervisor: passed" in result.stdout


def test_render_check_on_an_ssh_host_still_catches_a_bad_engine_setting(tmp_path):
    data = default_spec()
    data["deploy"]["hosts"] = [{"name": "remote", "address": "192.0.2.10", "connection": "ssh", "python": "/x/python"}]
    spec = write_spec(tmp_path, data)
    (tmp_path / "overrides" / "engine").mkdir(parents=True)
    (tmp_path / "overrides" / "engine" / "settings.json").write_text('{"workers": "many"}')
    result = assistantctl(spec, "render", "--check", "--only", "engine")
    assert result.returncode == 1
    assert "check engine: failed" in result.stdout


def test_the_schema_command_prints_the_committed_markdown_reference():
    result = assistantctl(REPO / "assistant.yaml", "schema", "--markdown")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "docs" / "spec.md").read_text()


def test_render_only_a_first_host_target_writes_every_hosts_manifest(tmp_path):
    # kubernetes is rendered for the first host only: the other hosts get an empty bundle, whose
    # folder must still be made for its MANIFEST.json.
    data = default_spec()
    data["deploy"]["hosts"] = [
        {"name": "edge-1", "address": "10.0.0.11", "roles": ["edge", "engine"]},
        {"name": "edge-2", "address": "10.0.0.12", "roles": ["monitoring"]},
    ]
    spec = write_spec(tmp_path, data)
    out = tmp_path / "out"
    result = assistantctl(spec, "render", "--only", "kubernetes", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "edge-1" / "kubernetes" / "kustomization.yaml").is_file()
    assert json.loads((out / "edge-2" / "MANIFEST.json").read_text())["files"] == {}
