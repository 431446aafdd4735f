"""The hash-chained audit log: the chain functions, and `audit verify`, `status` and every kind of
run (no-op, killed) on a real local deployment."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from assistantctl import audit, host_actions
from cli_helpers import ASSISTANTCTL, Deployment, applied

GITHUB_USER = "octocat-from-ci"


def entry(number: int, actor: str = "alice") -> dict:
    return {"action": "apply", "actor": actor, "result": "complete", "n": number}


def chained_log(path: Path, count: int) -> list[bytes]:
    host_actions.append_chained(str(path), [entry(n) for n in range(count)])
    return path.read_bytes().splitlines()


def problems(lines: list[bytes], anchors=()) -> list[list]:
    return host_actions.verify_chain(lines, anchors)["problems"]


def with_actor(line: bytes, actor: str) -> bytes:
    """The line with another actor, written the way a hand edit leaves it (other fields untouched)."""
    record = json.loads(line)
    record["actor"] = actor
    return json.dumps(record, sort_keys=True).encode()


def test_an_untouched_chain_verifies(tmp_path):
    lines = chained_log(tmp_path / "audit.log", 5)
    result = host_actions.verify_chain(lines)
    assert result["problems"] == [] and result["chained"] == 5 and result["last_seq"] == 5
    assert json.loads(lines[0])["prev"] == host_actions.GENESIS


@pytest.mark.parametrize("edited", [2, 5])  # a middle line, and the newest one (no line links to it)
def test_an_edited_actor_is_reported_on_its_line(tmp_path, edited):
    lines = chained_log(tmp_path / "audit.log", 5)
    lines[edited - 1] = with_actor(lines[edited - 1], "mallory")
    found = problems(lines)
    assert [line for line, _ in found] == [edited], found
    assert "edited" in found[0][1]


def test_an_edit_that_recomputes_the_lines_own_hash_breaks_the_next_link(tmp_path):
    lines = chained_log(tmp_path / "audit.log", 4)
    record = json.loads(with_actor(lines[1], "mallory"))
    lines[1] = host_actions._seal(record, record["seq"], record["prev"])
    assert [line for line, _ in problems(lines)] == [3]


def test_a_deleted_entry_is_reported(tmp_path):
    lines = chained_log(tmp_path / "audit.log", 5)
    del lines[2]
    found = problems(lines)
    assert [line for line, _ in found] == [3] and "deleted" in found[0][1], found


def test_swapped_entries_are_reported_as_reordered(tmp_path):
    lines = chained_log(tmp_path / "audit.log", 5)
    lines[1], lines[2] = lines[2], lines[1]
    found = problems(lines)
    assert [line for line, _ in found] == [2, 3] and all("reordered" in m for _, m in found), found


def test_a_truncated_tail_is_reported_against_the_head_recorded_elsewhere(tmp_path):
    path = tmp_path / "audit.log"
    chained_log(path, 3)
    [head] = host_actions.append_chained(str(path), [entry(3)])
    lines = path.read_bytes().splitlines()
    assert problems(lines, [{**head, "source": "the controller"}]) == []
    found = problems(lines[:-1], [{**head, "source": "the controller"}])
    assert len(found) == 1 and "truncated" in found[0][1], found


def test_lines_from_before_the_chain_are_unchained_not_tampering(tmp_path):
    path = tmp_path / "audit.log"
    legacy = [json.dumps(entry(n), sort_keys=True) for n in range(2)]
    path.write_text("".join(line + "\n" for line in legacy))
    host_actions.append_chained(str(path), [entry(2), entry(3)])
    lines = path.read_bytes().splitlines()
    result = host_actions.verify_chain(lines)
    assert result["problems"] == [] and result["unchained"] == 2 and result["chained"] == 2
    assert json.loads(lines[2])["seq"] == 1 and json.loads(lines[2])["prev"] == host_actions.GENESIS
    # an unchained line after the chain started is an insertion
    assert [line for line, _ in problems([*lines, legacy[0].encode()])] == [5]


def _append_many(path: str, writer: int) -> None:
    for n in range(40):
        host_actions.append_chained(path, [{"writer": writer, "n": n}])


def test_concurrent_writers_never_fork_the_chain(tmp_path):
    path = str(tmp_path / "audit.log")
    workers = [multiprocessing.get_context("fork").Process(target=_append_many, args=(path, w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result = host_actions.verify_chain(Path(path).read_bytes().splitlines())
    assert result["problems"] == [] and result["chained"] == 160


def test_status_gets_no_entry_from_a_log_that_fails_verification(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for n in range(3):
        host_actions.append_audit(str(tmp_path), entry(n))
    assert host_actions.last_audit(str(tmp_path), ["apply"])["entry"]["actor"] == "alice"
    lines = (logs / "audit.log").read_bytes().splitlines()
    lines[-1] = with_actor(lines[-1], "mallory")
    (logs / "audit.log").write_bytes(b"\n".join(lines) + b"\n")
    answer = host_actions.last_audit(str(tmp_path), ["apply"])
    assert answer["entry"] is None and "line 3" in answer["problem"]


def test_the_actor_comes_from_the_ci_system_when_assistant_actor_is_unset(monkeypatch, tmp_path):
    monkeypatch.delenv("ASSISTANT_ACTOR", raising=False)
    monkeypatch.setenv("GITHUB_ACTOR", GITHUB_USER)
    assert audit.actor(tmp_path) == GITHUB_USER
    monkeypatch.setenv("ASSISTANT_ACTOR", "release-bot")
    assert audit.actor(tmp_path) == "release-bot"


def test_a_started_run_whose_process_died_is_logged_as_interrupted_once(tmp_path):
    spec = tmp_path / "assistant.yaml"
    spec.write_text("{}\n")
    dead = subprocess.Popen(["true"])
    dead.wait()
    started = {**audit.make_entry("apply", spec, ["h1"], {}, "started"), "run": "r1"}
    started.update(controller=os.uname().nodename, pid=dead.pid)
    alive = {**started, "run": "r2", "pid": os.getpid()}
    audit._append_controller([started, alive], spec)
    audit._append_controller([audit.make_entry("plan", spec, ["h1"], {}, "planned")], spec)
    audit._append_controller([audit.make_entry("plan", spec, ["h1"], {}, "planned")], spec)
    log = [json.loads(line) for line in audit.controller_log(spec).read_text().splitlines()]
    interrupted = [e for e in log if e["result"].startswith("interrupted")]
    assert [e["run"] for e in interrupted] == ["r1"], log


# --- on a real local deployment -------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    env = {"ASSISTANT_ACTOR": "", "GITHUB_ACTOR": GITHUB_USER}
    with applied(Deployment(tmp_path_factory.mktemp("audit"), env=env)) as deployment:
        yield deployment


def controller_log(deployment: Deployment) -> Path:
    return deployment.folder / ".assistantctl" / "audit.log"


def host_log(deployment: Deployment) -> Path:
    return deployment.root / "logs" / "audit.log"


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Tampered:
    """Rewrite a log's lines for the duration of a block, then put the original bytes back."""

    def __init__(self, path: Path, change):
        self.path, self.change = path, change

    def __enter__(self) -> list[bytes]:
        self.original = self.path.read_bytes()
        lines = self.original.splitlines()
        self.change(lines)
        self.path.write_bytes(b"\n".join(lines) + b"\n")
        return lines

    def __exit__(self, *exc) -> None:
        self.path.write_bytes(self.original)


@pytest.mark.slow
def test_a_no_op_apply_is_logged_with_the_ci_actor(deployment):
    before = entries(controller_log(deployment))
    again = deployment.run("apply", "--auto-approve")
    assert again.returncode == 0, again.stdout + again.stderr
    after = entries(controller_log(deployment))
    assert len(after) == len(before) + 1
    assert after[-1]["action"] == "apply" and after[-1]["result"] == "no changes"
    assert after[-1]["actor"] == GITHUB_USER


@pytest.mark.slow
def test_untouched_logs_verify(deployment):
    verified = deployment.run("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "every chain verifies" in verified.stdout


@pytest.mark.slow
def test_an_edited_actor_fails_verify_on_its_line_and_status_does_not_show_it(deployment):
    def edit_last_apply(lines):
        lines[-1] = with_actor(lines[-1], "mallory")

    assert json.loads(host_log(deployment).read_bytes().splitlines()[-1])["action"] == "apply"
    with Tampered(host_log(deployment), edit_last_apply) as lines:
        verified = deployment.run("audit", "verify")
        status = deployment.run("status")
        as_json = json.loads(deployment.run("status", "--json").stdout)
    assert verified.returncode == 1, verified.stdout
    assert f"{host_log(deployment)}:{len(lines)}: " in verified.stdout, verified.stdout
    assert status.returncode == 0, status.stderr
    assert "mallory" not in status.stdout and "fails verification" in status.stdout, status.stdout
    assert as_json[0]["applied"] is None and as_json[0]["audit_problem"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, kind",
    [(lambda lines: lines.pop(1), "deleted"), (lambda lines: lines.insert(1, lines.pop(2)), "reordered")],
    ids=["deleted", "swapped"],
)
def test_a_deleted_or_swapped_controller_entry_fails_verify(deployment, change, kind):
    assert len(controller_log(deployment).read_bytes().splitlines()) >= 3
    with Tampered(controller_log(deployment), change):
        verified = deployment.run("audit", "verify")
    assert verified.returncode == 1, verified.stdout
    assert f"{controller_log(deployment)}:2: " in verified.stdout and kind in verified.stdout, verified.stdout


@pytest.mark.slow
def test_a_truncated_host_log_fails_verify(deployment):
    with Tampered(host_log(deployment), lambda lines: lines.pop()):
        verified = deployment.run("audit", "verify")
    assert verified.returncode == 1 and "truncated" in verified.stdout, verified.stdout


@pytest.mark.slow
def test_an_apply_killed_with_sigkill_is_logged_as_interrupted_by_the_next_run(deployment):
    data = json.loads(json.dumps(deployment.data))
    data["limits"]["rate_limit"]["burst"] = 77
    deployment.rewrite(data)
    env = {**os.environ, "NO_COLOR": "1", **deployment.env}
    killed = subprocess.Popen(
        [ASSISTANTCTL, "-f", str(deployment.spec), "apply", "--auto-approve"],
        cwd=deployment.folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so Ansible, its children and all die with it
    )
    deadline = time.monotonic() + 120

    def started_by_it() -> list[dict]:
        return [e for e in entries(controller_log(deployment)) if e["result"] == "started" and e["pid"] == killed.pid]

    while not started_by_it():
        assert killed.poll() is None and time.monotonic() < deadline, "the apply never logged its start"
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    [started] = started_by_it()
    planned = deployment.run("plan")
    assert planned.returncode == 0, planned.stderr
    ends = [e for e in entries(controller_log(deployment)) if e.get("run") == started["run"]]
    assert [e["result"].split(":")[0] for e in ends] == ["started", "interrupted"], ends
    assert ends[1]["actor"] == GITHUB_USER and ends[1]["hosts"] == started["hosts"]
    assert deployment.run("audit", "verify").returncode == 0
