"""`apply` without a saved plan changes hosts only after a typed `yes` on a terminal, or with
--auto-approve: as Terraform, a change nobody reviewed elsewhere is confirmed where it runs."""

from __future__ import annotations

import os
import pty
import subprocess

from cli_helpers import ASSISTANTCTL, Deployment


def run_on_terminal(deployment: Deployment, answer: str) -> tuple[int, str]:
    """Run `apply` with a pseudo-terminal as stdin and stdout, and type `answer` at its prompt."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [ASSISTANTCTL, "-f", str(deployment.spec), "apply"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=deployment.folder,
        env={**os.environ, "NO_COLOR": "1"},
    )
    os.close(terminal)
    seen = b""
    answered = False
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"Only 'yes' is accepted" in seen:
            os.write(controller, answer.encode() + b"\n")
            answered = True
    os.close(controller)
    return proc.wait(300), seen.decode(errors="replace")


def test_off_a_terminal_apply_needs_auto_approve_and_changes_nothing(tmp_path):
    deployment = Deployment(tmp_path)
    result = deployment.run("apply")
    assert result.returncode == 1
    assert "--auto-approve" in result.stderr and "+ " in result.stdout  # the plan was shown
    assert not (deployment.root / "current").exists()


def test_on_a_terminal_anything_but_yes_cancels(tmp_path):
    deployment = Deployment(tmp_path)
    code, seen = run_on_terminal(deployment, "y")
    assert code == 1, seen
    assert "apply cancelled; nothing changed" in seen
    assert not (deployment.root / "current").exists()


def test_on_a_terminal_yes_applies(tmp_path):
    deployment = Deployment(tmp_path)
    try:
        code, seen = run_on_terminal(deployment, "yes")
        assert code == 0, seen
        assert (deployment.root / "current").is_symlink()
        # nothing left to approve: a no-op asks nothing
        again = deployment.run("apply")
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        deployment.run("stop")
