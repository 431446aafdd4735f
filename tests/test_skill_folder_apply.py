"""A skill folder from declaration to answer (issue 13): a bad config.yaml stops at validate with
its file:line:col and deploys nothing; the good folder is shipped with the release, loaded by the
engine and answers its command through nginx; a changed handler shows in `plan` as a changed file
and goes live with the next apply (the workers roll onto the new code)."""

from __future__ import annotations

import copy
import shutil

import pytest

from cli_helpers import REPO, Deployment

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "skills" / "word_count"


def test_a_skill_folder_is_validated_shipped_loaded_and_answers_its_command(tmp_path):
    deployment = Deployment(tmp_path)
    folder = tmp_path / "skills" / "word_count"
    shutil.copytree(EXAMPLE, folder)
    config = folder / "config.yaml"
    good = config.read_text()
    config.write_text(good.replace("min_length: 2", "min_length: two"))
    data = copy.deepcopy(deployment.data)
    data.setdefault("tools", {})["skill_folders"] = ["skills/word_count"]
    deployment.rewrite(data)

    refused = deployment.run("apply", "--auto-approve")
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if text.startswith("  min_length:"))
    assert refused.returncode == 1
    assert f"skills/word_count/config.yaml:{line}:15: config.min_length:" in refused.stderr, refused.stderr
    assert not deployment.root.exists(), "a spec with a bad skill reached the host"

    config.write_text(good)
    checked = deployment.run("render", "--check", "--only", "engine,skills")
    assert "check skills: passed" in checked.stdout, checked.stdout + checked.stderr  # the handler imports there
    try:
        applied = deployment.run("apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        answer = deployment.chat("/words the quick brown fox a b")
        assert answer["reply"] == "4 words"
        assert answer["model"] == "skill:word_count"

        handler = folder / "handler.py"
        handler.write_text(handler.read_text().replace('label: str = "words"', 'label: str = "counted words"'))
        plan = deployment.run("plan")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "skills/word_count/handler.py" in plan.stdout, plan.stdout
        applied = deployment.run("apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert deployment.chat("/words the quick brown fox")["reply"] == "4 counted words"
    finally:
        deployment.run("stop")
