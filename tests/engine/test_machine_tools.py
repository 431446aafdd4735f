"""The machine tools (workspace_*, python, shell; engine/tools/builtin/workspace.py and execute.py)
against the real bubblewrap, called as the loop calls them (`call_tool` with JSON text): each works
in the caller's workspace, each path trick is refused with a sentence for the model (on the host,
and again inside the sandbox when the host check is bypassed), `shell` has no shell, limits end in
a sentence, permissions apply, and every call is audited with credentials masked. The last test
drives a real engine process: the model's python call runs in the sandbox, and a second user
cannot see the first one's file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_tool_models import ToolUpstream

from assistantctl.engine.settings import BUILTIN_TOOLS, MachineToolSettings, SecuritySettings, ToolsSettings
from assistantctl.engine.settings import ToolPermissionSettings as Rule
from assistantctl.engine.tools import ToolResult, call_tool, load_registry
from assistantctl.engine.tools.builtin import _machine
from assistantctl.engine.tools.sandbox import workspace_for
from engine_process import TEST_JWT_KEY, TEST_JWT_SECRET, as_user, model, start_engine, stop_engine
from fake_loop_model import plan
from test_tools_context import fake_context

MACHINE = [
    "workspace_list", "workspace_read", "workspace_search", "workspace_write", "workspace_edit", "workspace_patch",
    "python", "shell",
]  # fmt: skip


@pytest.fixture
def host() -> Iterator[Path]:
    """A folder the sandbox uids can traverse (pytest's tmp folders are 0700 to root): the engine's
    data_dir, a secret outside the workspaces, and the workspaces root."""
    assert shutil.which("bwrap"), "bubblewrap is missing: scripts/system-packages test installs it"
    folder = Path(tempfile.mkdtemp(prefix="machine-tools-"))
    folder.chmod(0o711)
    (folder / "data").mkdir(mode=0o700)
    (folder / "outside.txt").write_text("HOST-SECRET-4711")
    (folder / "outside.txt").chmod(0o644)
    yield folder
    shutil.rmtree(folder)


def settings(host: Path, **machine) -> ToolsSettings:
    return ToolsSettings(
        enabled=MACHINE,
        step_timeout_seconds=20,
        output_limit_bytes=4000,
        machine=MachineToolSettings(
            workspaces_dir=str(host / "workspaces"), wall_seconds=15, cpu_seconds=2, memory_bytes=256 << 20,
            processes=16, output_bytes=64 << 10, **machine,
        ),
    )  # fmt: skip


async def call(host: Path, tool: str, args: dict, user: str = "alice", channel: str = "web", **machine) -> ToolResult:
    tools = settings(host, **machine)
    context = fake_context(host / "data", user=user, channel=channel, settings=tools)
    return await call_tool(load_registry(tools), tool, json.dumps(args), context)


async def ok(host: Path, tool: str, args: dict, **kwargs) -> str:
    result = await call(host, tool, args, **kwargs)
    assert result.ok, result.content
    return result.content


async def refused(host: Path, tool: str, args: dict, **kwargs) -> str:
    result = await call(host, tool, args, **kwargs)
    assert result.outcome == "error", result.content
    return result.content


def alice_workspace(host: Path) -> Path:
    return workspace_for(host / "workspaces", "alice")


def test_every_machine_tool_is_off_by_default_and_of_the_machine_class() -> None:
    assert all(BUILTIN_TOOLS[name] == "machine" for name in MACHINE)
    assert not set(MACHINE) & set(ToolsSettings().enabled)
    assert all(tool.risk == "machine" for tool in load_registry(ToolsSettings(enabled=MACHINE)).tools.values())


# -- workspace files ------------------------------------------------------------------------------


async def test_write_read_list_search_edit_and_patch_a_file_of_the_workspace(host: Path) -> None:
    written = await ok(host, "workspace_write", {"path": "notes/todo.txt", "content": "feed otters\nbuy fish\n\n"})
    assert written == "wrote 22 bytes to notes/todo.txt"
    assert (alice_workspace(host) / "notes" / "todo.txt").read_text() == "feed otters\nbuy fish\n\n"
    assert await ok(host, "workspace_read", {"path": "notes/todo.txt"}) == "feed otters\nbuy fish\n\n"
    assert await ok(host, "workspace_list", {"recursive": True}) == "notes/\nnotes/todo.txt (22 bytes)"
    assert await ok(host, "workspace_search", {"text": "FISH", "ignore_case": True}) == "notes/todo.txt:2: buy fish"
    await ok(host, "workspace_edit", {"path": "notes/todo.txt", "old": "buy fish", "new": "buy herring"})
    assert "occurs 3 times" in await refused(host, "workspace_edit", {"path": "notes/todo.txt", "old": "\n", "new": ""})
    diff = "--- a/notes/todo.txt\n+++ b/notes/todo.txt\n@@ -1,2 +1,2 @@\n-feed otters\n+feed the otters\n buy herring\n"
    await ok(host, "workspace_patch", {"diff": diff})
    assert (alice_workspace(host) / "notes" / "todo.txt").read_text() == "feed the otters\nbuy herring\n\n"


async def test_another_user_never_sees_the_first_users_files(host: Path) -> None:
    await ok(host, "workspace_write", {"path": "mine.txt", "content": "alice only"})
    assert "no file 'mine.txt'" in await refused(host, "workspace_read", {"path": "mine.txt"}, user="bob")
    assert await ok(host, "workspace_list", {}, user="bob") == "'.' is empty"


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("../outside.txt", "goes up with '..'"),
        ("notes/../../outside.txt", "goes up with '..'"),
        ("/etc/shadow", "is an absolute path"),
        ("/proc/self/root/etc/shadow", "is an absolute path"),
        ("/workspace/../outside.txt", "is an absolute path"),
    ],
)
async def test_paths_that_leave_the_workspace_are_refused(host: Path, path: str, says: str) -> None:
    for tool, args in (
        ("workspace_read", {"path": path}),
        ("workspace_write", {"path": path, "content": "x"}),
        ("workspace_list", {"path": path}),
        ("python", {"file": path}),
    ):
        assert says in await refused(host, tool, args)
    assert (host / "outside.txt").read_text() == "HOST-SECRET-4711"


def plant_links(host: Path) -> Path:
    """Alice's workspace with a link to a file outside, a linked parent folder, a link to
    /proc/self/root and a hard link to a file outside (same filesystem)."""
    workspace = alice_workspace(host)
    (workspace / "secret.txt").symlink_to(host / "outside.txt")
    (workspace / "up").symlink_to(host)
    (workspace / "root").symlink_to("/proc/self/root")
    os.link(host / "outside.txt", workspace / "hard.txt")
    return workspace


TRICKS = [
    ("secret.txt", "is a symbolic link"),
    ("up/outside.txt", "'up' is a symbolic link"),
    ("root/etc/shadow", "'root' is a symbolic link"),
    ("hard.txt", "is a hard link"),
]


@pytest.mark.parametrize(("path", "says"), TRICKS)
async def test_links_are_refused_on_the_host_and_nothing_outside_changes(host: Path, path: str, says: str) -> None:
    plant_links(host)
    for tool, args in (
        ("workspace_read", {"path": path}),
        ("workspace_write", {"path": path, "content": "overwritten"}),
        ("workspace_edit", {"path": path, "old": "HOST", "new": "PWNED"}),
    ):
        content = await refused(host, tool, args)
        assert says in content and "HOST-SECRET" not in content
    assert (host / "outside.txt").read_text() == "HOST-SECRET-4711"


@pytest.mark.parametrize(("path", "says"), TRICKS)
async def test_links_are_refused_again_inside_the_sandbox(
    host: Path, path: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_links(host)
    monkeypatch.setattr(_machine, "_check_on_host", lambda folder, relative: None)  # as if a race beat it
    for tool, args in (
        ("workspace_read", {"path": path}),
        ("workspace_write", {"path": path, "content": "overwritten"}),
        ("workspace_edit", {"path": path, "old": "HOST", "new": "PWNED"}),
    ):
        content = await refused(host, tool, args)
        assert says in content and "HOST-SECRET" not in content
    assert (host / "outside.txt").read_text() == "HOST-SECRET-4711"


async def test_list_and_search_show_links_without_following_them(host: Path) -> None:
    plant_links(host)
    listing = await ok(host, "workspace_list", {"recursive": True})
    assert "secret.txt (symbolic link, not followed)" in listing and "up/" not in listing
    assert await ok(host, "workspace_search", {"text": "HOST-SECRET"}) == "no file contains 'HOST-SECRET'"


async def test_a_patch_naming_a_link_or_leaving_the_workspace_is_refused(host: Path) -> None:
    plant_links(host)
    into_link = "--- a/secret.txt\n+++ b/secret.txt\n@@ -1 +1 @@\n-HOST-SECRET-4711\n+PWNED\n"
    assert "is a symbolic link" in await refused(host, "workspace_patch", {"diff": into_link})
    through_parent = "--- a/up/outside.txt\n+++ b/up/outside.txt\n@@ -1 +1 @@\n-HOST-SECRET-4711\n+PWNED\n"
    assert "'up' is a symbolic link" in await refused(host, "workspace_patch", {"diff": through_parent})
    upwards = "--- a/../outside.txt\n+++ b/../outside.txt\n@@ -1 +1 @@\n-HOST-SECRET-4711\n+PWNED\n"
    assert "goes up with '..'" in await refused(host, "workspace_patch", {"diff": upwards})
    assert (host / "outside.txt").read_text() == "HOST-SECRET-4711"


# -- python and shell ------------------------------------------------------------------------------


async def test_python_runs_in_the_sandbox_and_its_files_persist(host: Path) -> None:
    code = "import os\nopen('result.txt', 'w').write('42')\nprint(os.getcwd(), sorted(os.listdir('/')))"
    content = await ok(host, "python", {"code": code})
    assert content.startswith("Sandboxed run: exited with status 0")
    assert "/workspace" in content and "'data'" not in content
    assert await ok(host, "workspace_read", {"path": "result.txt"}) == "42"
    await ok(host, "workspace_write", {"path": "hello.py", "content": "import sys\nprint('hi', sys.argv[1])"})
    assert "hi there" in await ok(host, "python", {"file": "hello.py", "args": ["there"]})


async def test_python_cannot_read_the_host_and_its_limits_end_in_a_sentence(host: Path) -> None:
    shadow = await refused(host, "python", {"code": f"print(open({str(host / 'outside.txt')!r}).read())"})
    assert "exited with status 1" in shadow and "FileNotFoundError" in shadow and "HOST-SECRET" not in shadow
    loop = await refused(host, "python", {"code": "while True: pass"})
    assert "killed: the CPU time limit of 2 s was reached" in loop
    flood = await refused(host, "python", {"code": "import sys\nwhile True: sys.stdout.write('x' * 65536)"})
    assert "killed: output over 65536 bytes" in flood and len(flood) < 4000


async def test_shell_runs_an_allowed_program_and_interprets_nothing(host: Path) -> None:
    await ok(host, "workspace_write", {"path": "a.txt", "content": "one\ntwo\n"})
    assert "a.txt" in await ok(host, "shell", {"command": "ls -la"})
    for command in ("ls; cat /etc/shadow", "sh -c 'cat /etc/shadow'", "/usr/bin/cat a.txt", "cat`id`"):
        assert "is not an allowed program" in await refused(host, "shell", {"command": command})
    # the metacharacters reach the program as plain arguments: nothing runs but ls and cat
    piped = await refused(host, "shell", {"command": "cat a.txt | cat /etc/shadow $(id) > /workspace/x"})
    assert "one\ntwo" in piped and "No such file" in piped and "root:" not in piped
    assert not (alice_workspace(host) / "x").exists()
    assert "cannot be split into words" in await refused(host, "shell", {"command": "ls 'notes"})


async def test_shell_allow_list_comes_from_the_settings(host: Path) -> None:
    await ok(host, "workspace_write", {"path": "a", "content": "one\ntwo\n"})
    assert "is not an allowed program" in await refused(host, "shell", {"command": "ls"}, shell_commands=["wc"])
    assert "2 a" in await ok(host, "shell", {"command": "wc -l a"}, shell_commands=["wc"])


# -- policy and audit ------------------------------------------------------------------------------


async def test_permission_rules_restrict_machine_tools_by_channel_and_user(host: Path) -> None:
    tools = settings(host).model_copy(update={"permissions": [Rule(tool="python", channels=["web"], users=["alice"])]})
    registry = load_registry(tools)
    code = json.dumps({"code": "print(1)"})
    allowed = await call_tool(registry, "python", code, fake_context(host / "data", settings=tools))
    assert allowed.ok, allowed.content
    for user, channel in (("bob", "web"), ("alice", "telegram")):
        context = fake_context(host / "data", user=user, channel=channel, settings=tools)
        result = await call_tool(registry, "python", code, context)
        assert result.outcome == "denied" and "no tool 'python'" in result.content
        assert "python" not in [d["function"]["name"] for d in registry.definitions(channel, user)]


async def test_every_call_is_audited_with_user_tool_status_duration_and_secrets_masked(
    host: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.audit")
    await refused(host, "python", {"code": "import sys\nTOKEN = 'sk-live-abcdefghijkl'\nsys.exit(3)"})
    await refused(host, "workspace_read", {"path": "../x"})
    lines = [record for record in caplog.records if getattr(record, "fields", {}).get("action") == "machine_tool"]
    assert [line.fields["tool"] for line in lines] == ["python", "workspace_read"]
    ran, refusal = (line.fields for line in lines)
    assert (ran["user"], ran["outcome"], ran["exit_code"], ran["sandbox"]) == ("alice", "error", 3, "run")
    assert ran["duration_ms"] > 0
    assert "sk-live" not in lines[0].getMessage() and "TOKEN = '***'" in lines[0].getMessage()
    assert (refusal["outcome"], refusal["exit_code"], refusal["sandbox"]) == ("error", None, "not run")
    assert '"path": "../x"' in lines[1].getMessage()


def test_secret_masking_covers_named_values_and_token_shapes() -> None:
    jwt = "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"
    text = f'password="hunter2!" api_key: abcd1234 Authorization: Bearer {jwt} ghp_' + "a" * 30
    masked = _machine.mask_secrets(text)
    assert "hunter2" not in masked and "abcd1234" not in masked and "eyJzdWIi" not in masked and "ghp_a" not in masked


# -- through a real engine -------------------------------------------------------------------------


def test_the_models_python_call_runs_in_the_sandbox_and_another_user_cannot_see_its_file(
    host: Path, module_dir: Path, loop_model: ToolUpstream
) -> None:
    tools = settings(host)
    audit_log = host / "audit.log"
    engine = start_engine(
        module_dir / "machine",
        [model("planner", "openai", model="planner", api_base=f"{loop_model.url}/v1", api_key_secret="k")],
        secrets={"k": "sk-test", TEST_JWT_SECRET: TEST_JWT_KEY},
        security=SecuritySettings(jwt_secret=TEST_JWT_SECRET, audit_log=str(audit_log)),
        tools=tools,
    )
    try:
        write = plan([("python", {"code": "import os\nopen('otter.txt','w').write('OTTER-42')\nprint(os.getuid())"})])
        first = chat(engine.url, write, as_user("alice"))
        assert "Sandboxed run: exited with status 0" in first and str(workspace_uid("alice")) in first
        read = plan([("python", {"code": "print(open('otter.txt').read())"})])
        assert "OTTER-42" in chat(engine.url, read, as_user("alice"))
        other = chat(engine.url, read, as_user("bob"))
        assert "FileNotFoundError" in other and "OTTER-42" not in other
    finally:
        stop_engine(engine)
    audited = [json.loads(line) for line in audit_log.read_text().splitlines()]
    calls = [(a["user"], a["tool"], a["exit_code"]) for a in audited if a.get("action") == "machine_tool"]
    assert calls == [("alice", "python", 0), ("alice", "python", 0), ("bob", "python", 1)]


def workspace_uid(user: str) -> int:
    from assistantctl.engine.tools.sandbox import sandbox_uid

    return sandbox_uid(user)


def chat(url: str, message: str, headers: dict[str, str]) -> str:
    response = httpx.post(f"{url}/api/v1/chat", json={"message": message}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["reply"]
