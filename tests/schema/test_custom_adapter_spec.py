"""`provider: custom` models: `class:` names an adapter class that `validate` imports (the spec's
folder first on sys.path) and checks against the adapter interface, `params:` must fit the class's
`Params` model; every problem points at file:line:col. Secret refs in params go to the secrets
file, never into settings.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings, secret_files
from assistantctl.schema.loader import SpecError, load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adapters"

ADAPTER = """\
from collections.abc import AsyncIterator

from pydantic import BaseModel

from assistantctl.engine.models.adapters import CallOptions, Chunk, Message, Reply, Usage


class Params(BaseModel):
    greeting: str
    repeat: int = 1
    token: str = ""


class {name}:
    Params = Params

    def __init__(self, params: Params) -> None:
        self.params = params

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        return Reply(text=self.params.greeting, usage=Usage(1, 1))

    async def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        yield [Chunk(delta=self.params.greeting), Chunk(usage=Usage(1, 1), finish_reason="stop")]


class NoStream:
    async def chat(self, messages, opts):
        return None


class SyncChat:
    def chat(self, messages, opts):
        return None

    async def stream(self, messages, opts):
        yield []


def not_a_class():
    return None
"""

MODEL = """\
models:
  default: mine
  fallback: [local]
  providers:
    local:
      provider: builtin
    mine:
      provider: custom
      class: {class_path}
      params:
{params}
"""


def write(folder: Path, module: str, class_path: str, params: str = "greeting: hello") -> Path:
    """A spec in `folder` whose model `mine` is `class_path`, and the adapter module beside it."""
    (folder / f"{module}.py").write_text(ADAPTER.format(name="Greeter"))
    indented = textwrap.indent(params, " " * 8)
    spec = folder / "assistant.yaml"
    spec.write_text(MODEL.format(class_path=class_path, params=indented))
    return spec


def problems(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    return caught.value.render().splitlines()


def line_of(spec: Path, text: str) -> int:
    return next(i for i, line in enumerate(spec.read_text().splitlines(), 1) if text in line)


def test_a_custom_adapter_next_to_the_spec_validates(tmp_path):
    spec = write(tmp_path, "adapter_ok", "adapter_ok:Greeter")
    assert load_spec(spec).models.providers["mine"].class_path == "adapter_ok:Greeter"


def test_a_dotted_class_path_validates_too(tmp_path):
    spec = write(tmp_path, "adapter_dotted", "adapter_dotted.Greeter")
    load_spec(spec)


def test_validate_from_another_folder_imports_from_the_spec_folder(tmp_path):
    spec = write(tmp_path, "adapter_cli", "adapter_cli:Greeter")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("assistantctl")), "-f", str(spec), "validate"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_a_missing_module_is_an_error_at_the_class_key(tmp_path):
    spec = write(tmp_path, "adapter_present", "adapter_absent:Greeter")
    line = line_of(spec, "class:")
    assert problems(spec) == [
        f"{spec}:{line}:7: models.providers.mine.class: module 'adapter_absent' not found "
        "(hint: put adapter_absent.py next to the spec, or install it where assistantctl and the engine run)"
    ]


def test_a_missing_class_and_a_function_are_errors(tmp_path):
    spec = write(tmp_path, "adapter_attrs", "adapter_attrs:Nope")
    assert "module 'adapter_attrs' has no attribute 'Nope'" in problems(spec)[0]
    spec = write(tmp_path, "adapter_attrs2", "adapter_attrs2:not_a_class")
    assert "'adapter_attrs2:not_a_class' is a function, not a class" in problems(spec)[0]


def test_a_class_without_stream_is_an_error_at_the_class_key(tmp_path):
    spec = write(tmp_path, "adapter_nostream", "adapter_nostream:NoStream")
    line = line_of(spec, "class:")
    [problem] = problems(spec)
    assert problem.startswith(f"{spec}:{line}:7: models.providers.mine.class: ")
    assert "adapter_nostream:NoStream does not implement the adapter interface: missing method stream" in problem


def test_a_sync_chat_is_an_error(tmp_path):
    spec = write(tmp_path, "adapter_sync", "adapter_sync:SyncChat")
    assert "chat must be a coroutine function (async def)" in problems(spec)[0]


def test_a_module_that_fails_to_import_says_why(tmp_path):
    spec = write(tmp_path, "adapter_broken", "adapter_broken:Greeter")
    (tmp_path / "adapter_broken.py").write_text("import a_dependency_that_is_not_installed\n")
    assert (
        "importing module 'adapter_broken' failed: ModuleNotFoundError: "
        "No module named 'a_dependency_that_is_not_installed'" in problems(spec)[0]
    )


def test_params_that_do_not_fit_the_params_model_point_at_the_key(tmp_path):
    spec = write(tmp_path, "adapter_params", "adapter_params:Greeter", "greeting: hello\nrepeat: many")
    [problem] = problems(spec)
    line = line_of(spec, "repeat:")
    assert problem.startswith(f"{spec}:{line}:17: models.providers.mine.params.repeat: ")
    assert "params do not fit adapter_params:Greeter.Params" in problem
    assert "valid integer" in problem


def test_a_missing_param_points_at_the_params_key(tmp_path):
    spec = write(tmp_path, "adapter_noparam", "adapter_noparam:Greeter", "repeat: 2")
    [problem] = problems(spec)
    assert problem.startswith(f"{spec}:{line_of(spec, 'params:')}:7: models.providers.mine.params: ")
    assert "'greeting' is required" in problem


def test_class_and_params_belong_to_custom_and_custom_needs_a_class(tmp_path):
    spec = tmp_path / "assistant.yaml"
    spec.write_text(
        "models:\n  default: a\n  providers:\n    a:\n      provider: builtin\n      class: x:Y\n"
        "    b:\n      provider: custom\n      params: {k: 1}\n"
        "    c:\n      provider: custom\n      class: adapter_c:Greeter\n      api_key: ${env:KEY}\n"
    )
    found = problems(spec)
    assert any(":5:7:" in p and "'class' and 'params' are for provider 'custom'" in p for p in found), found
    assert any(":8:7:" in p and "provider 'custom' needs class:" in p for p in found), found
    assert any(":11:7:" in p and "provider 'custom' takes no api_base or api_key" in p for p in found), found


def test_a_class_path_must_look_like_one(tmp_path):
    spec = write(tmp_path, "adapter_shape", "'adapter_shape: Greeter'")
    assert "String should match pattern" in problems(spec)[0]


def test_secret_params_go_to_the_secrets_file_and_skip_the_type_check(tmp_path):
    params = "greeting: hello\nrepeat: ${env:REPEAT}\ntoken: ${file:token.txt}\nnested: {a: [1, two]}"
    spec = write(tmp_path, "adapter_secret", "adapter_secret:Greeter", params)
    loaded = load_spec(spec)
    target = Target(spec=loaded, host=loaded.deploy.hosts[0], root=str(tmp_path / "root"), python=sys.executable)
    settings = build_settings(target)
    mine = next(m for m in settings.models if m.name == "mine")
    assert (mine.provider, mine.adapter_class) == ("custom", "adapter_secret:Greeter")
    assert mine.params == {"greeting": "hello", "nested": {"a": [1, "two"]}}
    assert mine.param_secrets == {
        "repeat": "models.providers.mine.params.repeat",
        "token": "models.providers.mine.params.token",
    }
    assert "${" not in settings.to_json() and "s3cr3t" not in settings.to_json()
    files = secret_files(target, {"models.providers.mine.params.token": "s3cr3t"})
    assert json.loads(files["secrets.json"]) == {"models.providers.mine.params.token": "s3cr3t"}


def test_a_nested_secret_ref_in_params_is_refused(tmp_path):
    spec = write(tmp_path, "adapter_nested", "adapter_nested:Greeter", "greeting: hi\nauth: {key: '${env:KEY}'}")
    [problem] = problems(spec)
    assert f"{spec}:{line_of(spec, 'auth:')}:" in problem
    assert "a secret reference must be a top-level value of params" in problem


def test_the_example_adapter_spec_validates():
    spec = load_spec(EXAMPLE / "assistant.yaml")
    assert spec.models.providers["faq"].provider == "custom"


def test_a_misspelt_class_key_suggests_class(tmp_path):
    spec = write(tmp_path, "adapter_typo", "adapter_typo:Greeter").read_text().replace("class:", "clas:")
    (tmp_path / "assistant.yaml").write_text(spec)
    assert "did you mean 'class'?" in "\n".join(problems(tmp_path / "assistant.yaml"))
