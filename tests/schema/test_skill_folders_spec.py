"""`tools.skill_folders`: each folder's config.yaml and handler.py are checked at validate, with
every problem at its file:line:col, and the checked folder is rendered into the engine's bundle
(its files) and settings (what it is, and a digest that changes with any of its files)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from assistantctl.renderers import Target, render_target
from assistantctl.schema.loader import SpecError, load_spec

HANDLER = """\
from pydantic import BaseModel

from assistantctl.engine.skills import BaseSkill, SkillContext


class WordCount(BaseSkill):
    class Config(BaseModel):
        min_length: int = 1
        label: str = "words"

    async def execute(self, context: SkillContext) -> str:
        words = [w for w in context.arguments.text.split() if len(w) >= self.config.min_length]
        return f"{len(words)} {self.config.label}"
"""

CONFIG = """\
description: Counts the words of a text.
command: /words
timeout_seconds: 5
config:
  min_length: 2
"""

SPEC = """\
version: 2
models:
  default: local
  providers:
    local:
      provider: builtin
tools:
  skill_folders:
    - {folder}
"""


def write_skill(folder: Path, handler: str = HANDLER, config: str = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(handler)
    (folder / "config.yaml").write_text(config)
    return folder


def write_spec(folder: Path, skill_folder: str = "skills/word_count") -> Path:
    spec = folder / "assistant.yaml"
    spec.write_text(SPEC.format(folder=skill_folder))
    return spec


def problems(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    return caught.value.render().splitlines()


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def target_for(spec_path: Path) -> Target:
    spec = load_spec(spec_path)
    return Target(spec=spec, host=spec.deploy.hosts[0], root="/srv/assistant", python="/usr/bin/python3")


def test_a_skill_folder_validates_and_is_rendered_into_the_engine_bundle(tmp_path):
    write_skill(tmp_path / "skills" / "word_count")
    (tmp_path / "skills" / "word_count" / "words.txt").write_text("extra file\n")
    (tmp_path / "skills" / "word_count" / "__pycache__").mkdir()
    (tmp_path / "skills" / "word_count" / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\0\1")
    files = render_target(target_for(write_spec(tmp_path)))
    assert files["skills/word_count/handler.py"] == HANDLER
    assert files["skills/word_count/config.yaml"] == CONFIG
    assert files["skills/word_count/words.txt"] == "extra file\n"
    assert not any("__pycache__" in path for path in files)
    [skill] = json.loads(files["engine/settings.json"])["skill_folders"]
    assert skill["name"] == "word_count"
    assert skill["path"] == "/srv/assistant/current/skills/word_count"
    assert skill["command"] == "/words" and skill["tool"] is True and skill["timeout_seconds"] == 5
    assert skill["config"] == {"min_length": 2}
    assert skill["description"] == "Counts the words of a text."


def test_any_change_to_a_skill_file_changes_its_digest_in_the_settings(tmp_path):
    folder = write_skill(tmp_path / "skills" / "word_count")
    spec = write_spec(tmp_path)

    def digest() -> str:
        return json.loads(render_target(target_for(spec))["engine/settings.json"])["skill_folders"][0]["digest"]

    first = digest()
    assert digest() == first  # deterministic
    (folder / "handler.py").write_text(HANDLER.replace('"words"', '"word(s)"'))
    second = digest()
    assert second != first
    (folder / "notes.md").write_text("a new file\n")
    assert digest() not in (first, second)


def test_a_config_value_of_the_wrong_type_is_reported_at_its_line_in_config_yaml(tmp_path):
    folder = write_skill(tmp_path / "skills" / "word_count", config=CONFIG.replace("min_length: 2", "min_length: two"))
    line = line_of(folder / "config.yaml", "min_length")
    [problem] = problems(write_spec(tmp_path))
    assert problem.startswith(f"{tmp_path}/skills/word_count/config.yaml:{line}:15: config.min_length: ")
    assert "integer" in problem


def test_a_config_key_the_handler_does_not_know_is_reported_at_its_key(tmp_path):
    folder = write_skill(tmp_path / "skills" / "word_count", config=CONFIG + "  colour: blue\n")
    line = line_of(folder / "config.yaml", "colour")
    assert problems(write_spec(tmp_path)) == [
        f"{tmp_path}/skills/word_count/config.yaml:{line}:3: unknown key 'config.colour'"
    ]


def test_config_yaml_itself_is_checked_with_positions(tmp_path):
    config = "description: Counts.\ncommand: words\ntimeout: 5\n"
    write_skill(tmp_path / "skills" / "word_count", config=config)
    found = problems(write_spec(tmp_path))
    assert found[0].startswith(f"{tmp_path}/skills/word_count/config.yaml:2:10: command: String should match pattern")
    assert found[1] == f"{tmp_path}/skills/word_count/config.yaml:3:1: unknown key 'timeout'"


def test_a_missing_folder_or_file_is_reported_at_its_entry_in_the_spec(tmp_path):
    spec = write_spec(tmp_path, "skills/absent")
    line = line_of(spec, "skills/absent")
    assert problems(spec) == [f"{spec}:{line}:7: tools.skill_folders[0] skills/absent: no such folder"]
    (tmp_path / "skills" / "absent").mkdir(parents=True)
    (tmp_path / "skills" / "absent" / "handler.py").write_text(HANDLER)
    assert problems(spec) == [
        f"{spec}:{line}:7: tools.skill_folders[0] skills/absent: a skill folder needs config.yaml"
    ]


def test_a_handler_that_does_not_import_is_reported_in_handler_py(tmp_path):
    broken = HANDLER.replace("        return f", "        return = f")
    folder = write_skill(tmp_path / "skills" / "word_count", handler=broken)
    line = line_of(folder / "handler.py", "return = f")
    [problem] = problems(write_spec(tmp_path))
    assert problem.startswith(f"{tmp_path}/skills/word_count/handler.py:{line}:16: invalid syntax")


def test_two_skills_may_not_share_a_name_or_a_command(tmp_path):
    write_skill(tmp_path / "skills" / "word_count")
    write_skill(tmp_path / "more" / "word_count")
    write_skill(tmp_path / "skills" / "counter")
    spec = tmp_path / "assistant.yaml"
    spec.write_text(SPEC.format(folder="skills/word_count\n    - more/word_count"))
    [problem] = problems(spec)
    assert "tools.skill_folders[1] more/word_count: a second skill named 'word_count'" in problem
    spec.write_text(SPEC.format(folder="skills/word_count\n    - skills/counter"))
    [problem] = problems(spec)
    assert "skills/counter: command /words is also the command of skills/word_count" in problem


def test_no_skill_folders_render_no_skills(tmp_path):
    spec = tmp_path / "assistant.yaml"
    spec.write_text(textwrap.dedent(SPEC).split("tools:")[0])
    files = render_target(target_for(spec))
    assert not any(path.startswith("skills/") for path in files)
    assert json.loads(files["engine/settings.json"])["skill_folders"] == []
