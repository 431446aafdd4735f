"""Which Ansible strategy `apply` runs its plays with (assistantctl/apply.py `_strategy`).

Every apply in the suite runs with Mitogen's: ansible-playbook refuses a play whose strategy it
cannot load ("Invalid play strategy specified"), so each passing apply is one that Mitogen ran.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistantctl.apply import STRATEGY_ENV, _strategy

PLAY = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: 'true'\n"


def test_plays_run_with_mitogens_linear_strategy_by_default(monkeypatch):
    monkeypatch.delenv(STRATEGY_ENV, raising=False)
    env = _strategy()
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()


def test_the_operator_can_choose_ansibles_own_strategy(monkeypatch):
    monkeypatch.setenv(STRATEGY_ENV, "linear")
    assert _strategy() == {}


def test_without_mitogen_apply_says_so_rather_than_run_another_strategy(monkeypatch):
    monkeypatch.delenv(STRATEGY_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=f"mitogen is not installed.*{STRATEGY_ENV}=linear"):
        _strategy()


def test_ansible_playbook_loads_the_strategy_and_runs_a_task_with_it(tmp_path, monkeypatch):
    monkeypatch.delenv(STRATEGY_ENV, raising=False)
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    env = {**os.environ, **_strategy(), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local")}
    command = [sys.executable, "-m", "ansible", "playbook", "-i", "localhost,", "-c", "local", str(play)]
    command += ["-e", f"ansible_python_interpreter={sys.executable}"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok=1" in result.stdout and "changed=1" in result.stdout

    # the same play with a strategy ansible-playbook cannot load is refused: the one above was Mitogen's
    env["ANSIBLE_STRATEGY_PLUGINS"] = str(tmp_path / "nowhere")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode != 0
    assert "mitogen_linear" in result.stdout + result.stderr
