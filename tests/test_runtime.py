"""The engine's runtime for SSH hosts: what goes into it and which wheels a host gets."""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest

from assistantctl import runtime

ENGINE = Path(__file__).resolve().parents[1] / "engine"


def engine_imports() -> set[str]:
    names = set()
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"assistantctl", "__future__"}


def test_every_library_the_engine_imports_is_in_the_hosts_runtime():
    closure = runtime.host_closure()
    providers = metadata.packages_distributions()
    missing = {
        module: providers.get(module)
        for module in engine_imports()
        if not any(dist.lower().replace("_", "-") in closure for dist in providers.get(module, ()))
    }
    # Playwright joins a host's runtime only where the spec enables the browser (assistantctl/targets.py
    # `engine_needs`; tests/schema/test_machine_tools_spec.py), imported when that tool runs.
    assert missing == {"playwright": ["playwright"]}
    # the compiler's own libraries stay on the controller
    assert not {"ansible-core", "jinja2", "docker"} & set(closure)


def test_the_runtime_pins_what_the_controller_runs_and_its_id_follows_the_engine_code():
    found = runtime.controller_runtime()
    assert f"uvicorn=={metadata.version('uvicorn')}" in found.pins
    assert f"uvloop=={metadata.version('uvloop')}" in found.pins  # an extra (uvicorn[standard]) is followed
    assert found.python("/srv/a") == f"/srv/a/venvs/{found.id}/bin/python"
    assert len(found.id) == 12 and found.id == runtime.controller_runtime.__wrapped__().id


def test_wheels_are_chosen_for_the_hosts_python_and_platform_not_the_controllers():
    flags = runtime._target_flags({"version": "3.12", "machine": "aarch64", "glibc": "2.31"})
    pairs = list(zip(flags[::2], flags[1::2], strict=True))
    assert ("--python-version", "3.12") in pairs and ("--abi", "cp312") in pairs
    platforms = [value for flag, value in pairs if flag == "--platform"]
    assert platforms[0] == "manylinux_2_31_aarch64" and platforms[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_32_aarch64" not in platforms


def test_a_host_without_glibc_is_told_to_bring_its_own_interpreter():
    with pytest.raises(runtime.RuntimeUnavailable, match="hosts\\[\\].python"):
        runtime._target_flags({"version": "3.11", "machine": "x86_64", "glibc": ""})
