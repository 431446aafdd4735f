"""A skill folder's requirements.txt (issue 13, item 7): checked line by line at validate; resolved
with pip at plan time into the managed runtime of SSH hosts (a new pin, a new runtime id; a conflict
or a missing distribution is a plan error naming the skill); on hosts that run the engine on their
own interpreter, plan only checks that the interpreter already has them.

Hermetic: pip sees only the tiny wheels the tests write (PIP_FIND_LINKS + PIP_NO_INDEX)."""

from __future__ import annotations

import base64
import hashlib
import io
import platform
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from assistantctl import runtime
from assistantctl.bundle import build_bundle
from assistantctl.schema.loader import load_spec
from assistantctl.targets import SkillRequirementsError, planned_target, target_runtime, targets
from cli_helpers import REPO, Deployment, assistantctl, default_spec, write_spec

EXAMPLE = REPO / "examples" / "skills" / "word_count"
HOST_PYTHON = {"version": "3.11", "machine": "x86_64", "glibc": "2.36"}
PYDANTIC = next(pin for pin in runtime.controller_runtime().pins if pin.startswith("pydantic=="))


def write_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel of `name` (one module that knows its version), written as pip reads it."""
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text)}\n"
        for path, text in files.items()
    )
    files[f"{dist}.dist-info/RECORD"] = record + f"{dist}.dist-info/RECORD,,\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture
def index(tmp_path, monkeypatch) -> Path:
    """The only package index pip sees, and a cache of the test's own."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    write_wheel(folder, "tinydep", "1.2.0")
    write_wheel(folder, "tinydep", "0.9")
    write_wheel(folder, "needsdep", "0.1", ("tinydep>=1",))
    write_wheel(folder, "wantsold", "1.0", ("tinydep<1",))
    write_wheel(folder, "oldpyd", "1.0", ("pydantic<2",))
    write_wheel(folder, "pydantic", PYDANTIC.split("==")[1])  # the engine's pin, as an index offers it
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return folder


def skill(spec_dir: Path, name: str, requirements: str | None) -> str:
    folder = spec_dir / "skills" / name
    shutil.copytree(EXAMPLE, folder)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("/words", f"/{name}"))
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return f"skills/{name}"


def spec_with(spec_dir: Path, skills: dict[str, str | None], host: dict | None = None) -> Path:
    data = default_spec()
    data.setdefault("tools", {})["skill_folders"] = [skill(spec_dir, name, text) for name, text in skills.items()]
    if host is not None:
        data["deploy"]["hosts"] = [host]
    return write_spec(spec_dir, data)


SSH_HOST = {"name": "far", "address": "192.0.2.1", "connection": "ssh", "roles": ["engine", "edge"]}


def ssh_target(spec_dir: Path, skills: dict[str, str | None]):
    path = spec_with(spec_dir, skills, SSH_HOST)
    (target,) = targets(load_spec(str(path)), spec_dir)
    return target


@pytest.mark.parametrize(
    ("line", "column", "why"),
    [
        ("-e ./vendored", 3, "pip options"),
        ("--index-url https://example.org/simple", 3, "pip options"),
        ("-r more.txt", 3, "pip options"),
        ("tinydep @ https://example.org/tinydep-1.0.whl", 3, "URL"),
        ("./vendored/tinydep", 3, "not a requirement"),
        ("tinydep >=>= 1", 3, "not a requirement"),
    ],
)
def test_a_requirements_line_that_is_not_a_requirement_is_refused_at_its_place(tmp_path, line, column, why):
    spec = spec_with(tmp_path, {"counts": f"# what the skill needs\n\n  {line}\n"})
    checked = assistantctl(spec, "validate")
    assert checked.returncode == 1
    assert f"skills/counts/requirements.txt:3:{column}:" in checked.stderr, checked.stderr
    assert why in checked.stderr, checked.stderr


def test_requirements_are_part_of_the_folders_files_and_digest(tmp_path):
    spec = load_spec(str(spec_with(tmp_path, {"counts": "tinydep>=1  # the counting\n\nneedsdep\n"})))
    (folder,) = spec.loaded_skill_folders
    assert folder.requirements == ("tinydep>=1", "needsdep")
    assert ("requirements.txt", "tinydep>=1  # the counting\n\nneedsdep\n") in folder.files
    before = folder.digest
    (tmp_path / "skills" / "counts" / "requirements.txt").write_text("tinydep>=1.1\n")
    assert load_spec(str(tmp_path / "assistant.yaml")).loaded_skill_folders[0].digest != before


def test_a_skills_requirements_are_pinned_into_the_hosts_runtime_under_a_new_id(tmp_path, index):
    target = ssh_target(tmp_path, {"counts": "needsdep\n", "plain": None})
    base = runtime.controller_runtime()
    assert target.runtime == base.id

    planned = planned_target(target, {"python": HOST_PYTHON})
    assert planned.runtime != base.id
    assert planned.python == f"{target.root}/venvs/{planned.runtime}/bin/python"
    extended = runtime.runtime_for(target.spec.loaded_skill_folders, HOST_PYTHON)
    assert extended.id == planned.runtime and extended.pins == base.pins
    assert extended.extras == ("needsdep==0.1", "tinydep==1.2.0")
    program = build_bundle(planned, shipped=True).entries()  # the engine runs the new virtualenv
    assert "supervisor/programs/engine.conf" in program

    # resolved once: the next plan takes the cached answer, pip (and its index) is not asked again
    shutil.rmtree(index)
    assert runtime.runtime_for(target.spec.loaded_skill_folders, HOST_PYTHON) == extended


def test_a_host_whose_python_needs_more_of_the_engines_dependencies_gets_them_in_its_runtime(tmp_path, index):
    # redis needs async-timeout below Python 3.11.3 (Debian 12 has 3.11.2); a controller on a newer
    # Python pins no such thing, and a runtime built from its pins alone could not import redis there.
    write_wheel(index, "async-timeout", "4.0.3")
    debian = {**HOST_PYTHON, "full_version": "3.11.2"}
    (needs,) = runtime.interpreter_needs(debian)
    assert any(line.startswith("async-timeout") for line in needs.requirements), needs
    assert runtime.interpreter_needs({**HOST_PYTHON, "full_version": platform.python_version()}) == []

    target = ssh_target(tmp_path, {"plain": None})
    planned = planned_target(target, {"python": debian})
    assert planned.runtime != target.runtime
    found = target_runtime(target, debian)  # what apply installs: the same runtime plan named
    assert found.id == planned.runtime and "async-timeout==4.0.3" in found.extras
    assert planned_target(target, {"python": {**HOST_PYTHON, "full_version": platform.python_version()}}) == target


def test_a_skill_without_requirements_keeps_the_engines_runtime(tmp_path, index):
    target = ssh_target(tmp_path, {"plain": None, "empty": "# nothing\n"})
    assert planned_target(target, {"python": HOST_PYTHON}) == target


def test_a_requirement_against_an_engine_pin_is_a_plan_error_naming_the_skill(tmp_path, index):
    target = ssh_target(tmp_path, {"plain": None, "legacy": "oldpyd\n"})
    with pytest.raises(SkillRequirementsError) as caught:
        planned_target(target, {"python": HOST_PYTHON})
    message = str(caught.value)
    assert message.startswith("far: ")
    assert "skills/legacy/requirements.txt" in message and "skills/plain" not in message, message
    assert "oldpyd 1.0 depends on pydantic<2" in message and PYDANTIC in message, message
    assert "To fix this you could try" not in message  # pip's own advice is left out


def test_two_skills_that_conflict_are_a_plan_error_naming_both(tmp_path, index):
    target = ssh_target(tmp_path, {"counts": "needsdep\n", "plain": None, "older": "wantsold\n"})
    with pytest.raises(SkillRequirementsError) as caught:
        planned_target(target, {"python": HOST_PYTHON})
    message = str(caught.value)
    assert "skills/counts/requirements.txt" in message and "skills/older/requirements.txt" in message, message
    assert "needsdep 0.1 depends on tinydep>=1" in message and "wantsold 1.0 depends on tinydep<1" in message


def test_a_requirement_pip_cannot_find_is_a_plan_error(tmp_path, index):
    target = ssh_target(tmp_path, {"ghost": "nosuchdist>=1\n"})
    with pytest.raises(SkillRequirementsError, match=r"skills/ghost/requirements.txt.*nosuchdist"):
        planned_target(target, {"python": HOST_PYTHON})


def test_a_runtimes_wheelhouse_reuses_the_engines_wheels_and_fetches_only_the_extras(tmp_path, index):
    target = ssh_target(tmp_path, {"counts": "needsdep\n"})
    extended = runtime.runtime_for(target.spec.loaded_skill_folders, HOST_PYTHON)
    cache = tmp_path / "cache" / "assistantctl"
    base = cache / "wheelhouses" / f"{extended.base.id}-cp311-x86_64-glibc2.36.tar"
    base.parent.mkdir(parents=True)
    with tarfile.open(base, "w") as tar:  # as wheelhouse() left it for the engine's runtime
        for name, text in (("engine_dep-1-py3-none-any.whl", "x"), ("requirements.txt", "engine-dep==1\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))

    with tarfile.open(runtime.wheelhouse(extended, HOST_PYTHON, cache)) as tar:
        names = set(tar.getnames())
        wanted = tar.extractfile("requirements.txt").read().decode().split()
    assert names == {
        "engine_dep-1-py3-none-any.whl",
        "needsdep-0.1-py3-none-any.whl",
        "tinydep-1.2.0-py3-none-any.whl",
        "requirements.txt",
    }
    assert wanted == [*extended.pins, "needsdep==0.1", "tinydep==1.2.0"]


def test_a_local_host_missing_a_skills_requirement_is_a_plan_error(tmp_path, index):
    deployment = Deployment(tmp_path)
    data = deployment.data
    data.setdefault("tools", {})["skill_folders"] = [skill(tmp_path, "counts", "tinydep>=1\npydantic<2\n")]
    deployment.rewrite(data)
    planned = deployment.run("plan")
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert "local: the engine runs on" in planned.stderr, planned.stderr
    assert "skills/counts/requirements.txt: tinydep>=1 (not installed)" in planned.stderr
    assert f"skills/counts/requirements.txt: pydantic<2 ({PYDANTIC.split('==')[1]} installed, the engine needs it)" in (
        planned.stderr
    )
    assert "-m pip install 'tinydep>=1')" in planned.stderr  # never another version of an engine library
    assert not deployment.root.exists()


def test_a_local_host_whose_interpreter_has_the_requirements_plans(tmp_path, index):
    deployment = Deployment(tmp_path)
    data = deployment.data
    needs = 'pydantic>=2\nnothere>=1; python_version < "3"\n'  # the second is not for this python
    data.setdefault("tools", {})["skill_folders"] = [skill(tmp_path, "counts", needs)]
    deployment.rewrite(data)
    planned = deployment.run("plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "skills/counts/requirements.txt" in planned.stdout, planned.stdout
