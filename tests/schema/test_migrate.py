"""Spec versions: an older file still loads (with a warning), errors point into it as written, and
`assistantctl migrate` rewrites it for the current version, comments and key order kept."""

from __future__ import annotations

import typing

import pytest

from assistantctl.schema.loader import parse_spec
from assistantctl.schema.migrate import migrate_text
from assistantctl.schema.spec import Spec
from assistantctl.schema.versions import CURRENT_VERSION, MIGRATIONS, moved_since, upgrade, v1_to_v2
from cli_helpers import REPO, assistantctl
from spec_snippets import MINIMAL, problems

# Version 1, keys in an unusual order, comments on lines of their own, at line ends and inside the
# skills list that version 2 moves.
V1 = """\
# Written for version 1.
name: odd   # the deployment
skills:     # run in order
  - name: persona
    entrypoint: builtin:system_prompt   # shipped with the engine
    config: {text: "Be brief."}
  - name: no-secrets
    entrypoint: builtin:redact
    hooks: [post]

# the models come after the skills here
models:
  providers:
    local: {provider: builtin}
  default: local
version: 1   # the format
"""

V2 = """\
# Written for version 1.
name: odd   # the deployment
tools:
  skills:   # run in order
    - name: persona
      entrypoint: builtin:system_prompt # shipped with the engine
      config: {text: "Be brief."}
    - name: no-secrets
      entrypoint: builtin:redact
      hooks: [post]

# the models come after the skills here
models:
  providers:
    local: {provider: builtin}
  default: local
version: 2   # the format
"""


def test_a_version_1_file_is_rewritten_for_version_2_keeping_comments_and_key_order():
    rewrite = migrate_text(V1, "spec.yaml")
    assert (rewrite.written, rewrite.changes) == (1, ["skills: moved to tools.skills"])
    assert rewrite.text == V2
    spec = parse_spec(rewrite.text, "spec.yaml")
    assert spec.version == 2
    assert [skill.name for skill in spec.tools.skills] == ["persona", "no-secrets"]
    assert spec == parse_spec(V1, "spec.yaml")


def test_migrating_a_migrated_file_changes_nothing():
    again = migrate_text(migrate_text(V1, "spec.yaml").text, "spec.yaml")
    assert not again.pending
    assert again.text == V2
    assert again.diff("spec.yaml") == ""


def test_a_file_without_a_version_is_version_1_and_gets_one():
    rewrite = migrate_text(MINIMAL + "skills:\n  - {name: p, entrypoint: 'builtin:redact'}\n", "spec.yaml")
    assert rewrite.written == 1
    assert (
        rewrite.text == "version: 2\n" + MINIMAL + "tools:\n  skills:\n    - {name: p, entrypoint: 'builtin:redact'}\n"
    )


def test_a_version_1_file_still_loads_with_a_warning_naming_it(tmp_path):
    spec_file = tmp_path / "old.yaml"
    spec_file.write_text(V1)
    result = assistantctl(spec_file, "validate")
    assert result.returncode == 0, result.stderr
    assert f"{spec_file}: valid" in result.stdout
    assert result.stderr.startswith(f"warning: {spec_file} is written for spec version 1;"), result.stderr
    assert f"`assistantctl -f {spec_file} migrate --write` rewrites it" in result.stderr
    assert spec_file.read_text() == V1, "loading never rewrites the file"


def test_loading_reports_the_migration_only_to_whoever_asked():
    notes: list[str] = []
    parse_spec(V2, "spec.yaml", notes.append)
    assert notes == []
    parse_spec(V1, "spec.yaml", notes.append)
    assert notes == [
        "spec.yaml is written for spec version 1; it was read as version 2 (skills: moved to tools.skills). "
        "`assistantctl -f spec.yaml migrate --write` rewrites it"
    ]


def test_errors_in_a_version_1_file_point_at_its_own_lines():
    broken = V1.replace("    hooks: [post]", "    hooks: [psot]").replace("builtin:redact", "builtin:scrub")
    broken = broken.replace("config: {text:", "confg: {text:").replace("  default: local", "  default: locl")
    assert problems(broken) == [
        "spec.yaml:6:5: unknown key 'skills.0.confg' (hint: did you mean 'config'?)",
        "spec.yaml:9:13: skills.1.hooks.0: Input should be 'pre' or 'post' (hint: did you mean 'post'?)",
    ]
    # Once the shapes are right, the cross-checks too point into the file as written.
    assert problems(V1.replace("builtin:redact", "builtin:scrub").replace("  default: local", "  default: locl")) == [
        "spec.yaml:8:17: no builtin skill 'scrub' (hint: builtin skills: redact, reply_limit, system_prompt)",
        "spec.yaml:15:12: default model 'locl' is not declared (hint: declared: local)",
    ]


def test_errors_in_a_version_2_file_name_the_new_place():
    text = V2.replace("builtin:redact", "builtin:scrub")
    assert problems(text) == [
        "spec.yaml:9:19: no builtin skill 'scrub' (hint: builtin skills: redact, reply_limit, system_prompt)"
    ]
    [line] = problems(V2.replace("      hooks: [post]", "      hook: [post]"))
    assert line == "spec.yaml:10:7: unknown key 'tools.skills.1.hook' (hint: did you mean 'hooks'?)"


def test_a_version_2_file_using_an_old_key_is_told_where_it_went():
    text = "version: 2\n" + MINIMAL + "skills: []\n"
    assert problems(text) == ["spec.yaml:7:1: unknown key 'skills' (hint: version 2 moved it to tools.skills)"]
    assert moved_since(("skills",)) == "version 2 moved it to tools.skills"
    assert moved_since(("limits",)) is None


@pytest.mark.parametrize(
    ("version", "message", "hint"),
    [
        ("3", "spec version 3 is newer than this assistantctl, which reads versions 1 to 2", "upgrade assistantctl"),
        ("0", "unknown spec version 0", "this assistantctl reads versions 1 to 2"),
        ("'2'", "unknown spec version '2'", "this assistantctl reads versions 1 to 2"),
    ],
)
def test_a_version_this_assistantctl_does_not_know_is_one_clear_error(version, message, hint):
    [line] = problems(f"version: {version}\n" + MINIMAL + "surprise: {}\n")
    assert line.startswith(f"spec.yaml:1:10: version: {message} (hint: {hint}"), line


def test_migrate_prints_a_diff_and_with_check_exits_1_while_a_migration_is_pending(tmp_path):
    spec_file = tmp_path / "assistant.yaml"
    spec_file.write_text(V1)
    shown = assistantctl(spec_file, "migrate")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"--- {spec_file} (version 1)\n+++ {spec_file} (version 2)\n")
    assert "\n-skills:     # run in order\n" in shown.stdout
    assert "\n+tools:\n+  skills:   # run in order\n" in shown.stdout
    checked = assistantctl(spec_file, "migrate", "--check")
    assert checked.returncode == 1
    assert "a migration is pending" in checked.stderr
    assert spec_file.read_text() == V1, "neither the diff nor --check writes"

    written = assistantctl(spec_file, "migrate", "--write")
    assert written.returncode == 0, written.stderr
    assert spec_file.read_text() == V2
    again = assistantctl(spec_file, "migrate", "--check")
    assert (again.returncode, again.stdout) == (0, "")
    assert assistantctl(spec_file, "validate").stderr == ""


def test_migrate_writes_elsewhere_with_o_and_takes_its_own_f(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(V1)
    result = assistantctl(tmp_path / "unused.yaml", "migrate", "-f", str(old), "-o", str(new))
    assert result.returncode == 0, result.stderr
    assert (old.read_text(), new.read_text()) == (V1, V2)
    to_stdout = assistantctl(old, "migrate", "-o", "-")
    assert to_stdout.stdout == V2


def test_migrate_refuses_a_file_that_does_not_load_and_a_future_version(tmp_path):
    spec_file = tmp_path / "assistant.yaml"
    spec_file.write_text(V1.replace("builtin:redact", "builtin:scrub"))
    result = assistantctl(spec_file, "migrate", "--write")
    assert result.returncode == 1
    assert result.stderr.startswith(f"{spec_file}:8:17: no builtin skill 'scrub'"), result.stderr
    spec_file.write_text(V2.replace("version: 2", "version: 9"))
    result = assistantctl(spec_file, "migrate", "--check")
    assert result.returncode == 1
    assert f"{spec_file}:17:10: version: spec version 9 is newer than this assistantctl" in result.stderr


def test_the_shipped_specs_are_the_current_version():
    for path in (REPO / "assistant.yaml", REPO / "examples" / "production.yaml"):
        assert not migrate_text(path.read_text(), str(path)).pending, f"run: assistantctl -f {path} migrate --write"


# --- the steps --------------------------------------------------------------------------------


def test_the_steps_go_up_one_version_at_a_time_to_the_models_version():
    assert [step.to for step in MIGRATIONS] == list(range(2, CURRENT_VERSION + 1))
    assert typing.get_args(Spec.model_fields["version"].annotation) == (CURRENT_VERSION,)


def test_v1_to_v2_moves_skills_under_tools():
    data = {"version": 1, "skills": [{"name": "p"}], "limits": {}}
    assert v1_to_v2(data) == [(("tools", "skills"), ("skills",))]
    assert data == {"version": 1, "tools": {"skills": [{"name": "p"}]}, "limits": {}}


@pytest.mark.parametrize(
    "data",
    [{"limits": {}}, {"skills": [], "tools": {"skills": []}}],
    ids=["no skills", "tools written by hand"],
)
def test_v1_to_v2_moves_nothing_when_there_is_nothing_to_move(data):
    before = {**data}
    assert v1_to_v2(data) == []
    assert data == before


def test_upgrade_maps_locations_back_to_the_file():
    data = {"skills": [{"name": "p"}]}
    done = upgrade(data)
    assert (done.written, data["version"]) == (1, CURRENT_VERSION)
    assert done.file_location(("tools", "skills", 0, "name")) == ("skills", 0, "name")
    assert done.file_location(("limits", "burst")) == ("limits", "burst")
