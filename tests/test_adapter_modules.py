"""A custom adapter's module that sits next to the spec is shipped with the release: its files go
to `<release>/adapters/`, the engine's settings put that folder first on its import path with a
digest of the files (changed code rolls the workers), and the host's interpreter imports the class
before the release goes live. A module the spec's folder does not hold is left to the engine's
environment, as before."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from assistantctl.checks import run_checks
from assistantctl.renderers import Target, render_target
from assistantctl.schema.adapter_modules import AdapterModule
from assistantctl.schema.loader import SpecError, load_spec

ADAPTER = """\
from collections.abc import AsyncIterator

from assistantctl.engine.models.adapters import CallOptions, Chunk, Message, Reply, Usage


class Greeter:
    def __init__(self, params: dict) -> None:
        self.greeting = params.get("greeting", "{greeting}")

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        return Reply(text=self.greeting, usage=Usage(1, 1))

    async def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        yield [Chunk(delta=self.greeting), Chunk(usage=Usage(1, 1), finish_reason="stop")]
"""

SPEC = """\
version: 2
models:
  default: mine
  fallback: [local]
  providers:
    local:
      provider: builtin
    mine:
      provider: custom
      class: {class_path}
"""


def write_spec(folder: Path, class_path: str) -> Path:
    spec = folder / "assistant.yaml"
    spec.write_text(SPEC.format(class_path=class_path))
    return spec


def target_of(spec_file: Path, root: str = "/srv/assistant") -> Target:
    spec = load_spec(spec_file)
    return Target(spec=spec, host=spec.deploy.hosts[0], root=root, python=sys.executable)


def settings_of(files: dict[str, str]) -> dict:
    return json.loads(files["engine/settings.json"])


def test_a_module_next_to_the_spec_is_shipped_and_put_first_on_the_engines_path(tmp_path):
    (tmp_path / "greeter_ship.py").write_text(ADAPTER.format(greeting="hi"))
    target = target_of(write_spec(tmp_path, "greeter_ship:Greeter"))
    files = render_target(target)
    assert files["adapters/greeter_ship.py"] == ADAPTER.format(greeting="hi")
    assert [path for path in files if path.startswith("adapters/")] == ["adapters/greeter_ship.py"]
    code = settings_of(files)["adapter_code"]
    assert code["path"] == f"{target.current}/adapters"
    assert render_target(target_of(tmp_path / "assistant.yaml")) == files, "not deterministic"

    (tmp_path / "greeter_ship.py").write_text(ADAPTER.format(greeting="hello"))
    changed = settings_of(render_target(target_of(tmp_path / "assistant.yaml")))["adapter_code"]
    assert changed["path"] == code["path"]
    assert changed["digest"] != code["digest"], "changed adapter code must change the settings"


def test_a_package_folder_is_shipped_whole_without_caches(tmp_path):
    package = tmp_path / "greeter_pkg"
    (package / "impl").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "impl" / "__init__.py").write_text(ADAPTER.format(greeting="pkg"))
    (package / "answers.txt").write_text("data the adapter reads\n")
    (package / "impl" / "__pycache__").mkdir()  # what an import on the developer's machine leaves
    (package / "impl" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\xa7\r\r\n")
    (package / ".editor.swp").write_bytes(b"\x00")
    target = target_of(write_spec(tmp_path, "greeter_pkg.impl:Greeter"))
    shipped = sorted(path for path in render_target(target) if path.startswith("adapters/"))
    assert shipped == [
        "adapters/greeter_pkg/__init__.py",
        "adapters/greeter_pkg/answers.txt",
        "adapters/greeter_pkg/impl/__init__.py",
    ]


def test_a_module_from_the_engines_environment_is_not_shipped(tmp_path, monkeypatch):
    installed = tmp_path / "site"
    installed.mkdir()
    (installed / "greeter_installed.py").write_text(ADAPTER.format(greeting="installed"))
    monkeypatch.syspath_prepend(str(installed))
    folder = tmp_path / "spec"
    folder.mkdir()
    files = render_target(target_of(write_spec(folder, "greeter_installed:Greeter")))
    assert not [path for path in files if path.startswith("adapters/")]
    assert settings_of(files)["adapter_code"] is None


def test_a_package_file_that_is_not_text_is_an_error_at_the_class_key(tmp_path):
    package = tmp_path / "greeter_binary"
    package.mkdir()
    (package / "__init__.py").write_text(ADAPTER.format(greeting="bin"))
    (package / "weights.bin").write_bytes(b"\xff\xfe\x00binary")
    spec = write_spec(tmp_path, "greeter_binary:Greeter")
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if "class:" in text)
    assert caught.value.render().splitlines() == [
        f"{spec}:{line}:7: models.providers.mine.class: package greeter_binary: weights.bin: not UTF-8 text"
    ]


def test_the_host_imports_the_shipped_class_before_the_release_goes_live(tmp_path):
    (tmp_path / "greeter_check.py").write_text(ADAPTER.format(greeting="checked"))
    target = target_of(write_spec(tmp_path, "greeter_check:Greeter"))
    (passed,) = [r for r in run_checks(target, only={"adapters"})]
    assert passed.status == "passed", passed.output

    # What a host would get if the shipped file were not the adapter validate saw: the check fails.
    broken = AdapterModule("greeter_check", (("greeter_check.py", "class Greeter:\n    pass\n"),))
    spec = target.spec.model_copy()
    spec._adapter_modules = (broken,)
    (failed,) = run_checks(replace(target, spec=spec), only={"adapters"})
    assert failed.status == "failed"
    assert "does not implement the adapter interface" in failed.output


def test_compose_binds_the_shipped_adapter_where_the_engines_settings_look(tmp_path):
    (tmp_path / "greeter_compose.py").write_text(ADAPTER.format(greeting="composed"))
    files = render_target(target_of(write_spec(tmp_path, "greeter_compose:Greeter")))
    assert files["compose/adapters/greeter_compose.py"] == ADAPTER.format(greeting="composed")
    code = json.loads(files["compose/engine/settings.json"])["adapter_code"]
    engine = yaml.safe_load(files["compose/docker-compose.yml"])["services"]["engine"]
    assert f"./adapters/greeter_compose.py:{code['path']}/greeter_compose.py:ro" in engine["volumes"]


def class_key_problem(spec: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if "class:" in text)
    (problem,) = caught.value.render().splitlines()
    assert problem.startswith(f"{spec}:{line}:7: models.providers.mine.class: "), problem
    return problem


@pytest.mark.parametrize("name", ["http", "queue", "json"])
def test_a_module_named_like_one_of_the_standard_library_is_refused(tmp_path, name):
    # The engine has imported these before it builds its models: it would never see the shipped one.
    (tmp_path / f"{name}.py").write_text(ADAPTER.format(greeting="shadow"))
    problem = class_key_problem(write_spec(tmp_path, f"{name}:Greeter"))
    assert f"'{name}' is also the name of a module of Python's standard library" in problem


def test_a_module_named_like_an_installed_one_is_refused(tmp_path, monkeypatch):
    installed = tmp_path / "site"
    (installed / "greeter_twice").mkdir(parents=True)
    (installed / "greeter_twice" / "__init__.py").write_text(ADAPTER.format(greeting="installed"))
    monkeypatch.syspath_prepend(str(installed))
    folder = tmp_path / "spec"
    (folder / "greeter_twice").mkdir(parents=True)  # a folder without __init__.py: validate imports the installed one
    (folder / "greeter_twice" / "NOTES.md").write_text("a checkout of the adapter's repository\n")
    problem = class_key_problem(write_spec(folder, "greeter_twice:Greeter"))
    assert f"'greeter_twice' is also the name of an installed module ({installed / 'greeter_twice'}" in problem


def test_a_module_the_adapter_imports_from_the_spec_folder_must_travel_with_it(tmp_path):
    (tmp_path / "greeter_words.py").write_text("GREETING = 'from a sibling'\n")
    (tmp_path / "greeter_sibling.py").write_text("import greeter_words\n" + ADAPTER.format(greeting="x"))
    problem = class_key_problem(write_spec(tmp_path, "greeter_sibling:Greeter"))
    assert "imports 'greeter_words' from the spec's folder, which is not shipped with it" in problem


def test_a_file_name_a_compose_bind_cannot_carry_is_refused(tmp_path):
    package = tmp_path / "greeter_colon"
    package.mkdir()
    (package / "__init__.py").write_text(ADAPTER.format(greeting="colon"))
    (package / "answers:v2.txt").write_text("text\n")
    problem = class_key_problem(write_spec(tmp_path, "greeter_colon:Greeter"))
    assert "answers:v2.txt: a shipped file's name may not hold ':'" in problem
