"""`assistantctl chat` against a real engine on loopback: interactive under a pseudo-terminal
(pexpect), and once for scripts. The engine has the builtin offline model ("what is 6*7?" goes
through the calculator) and a slow fake OpenAI upstream to interrupt."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from assistantctl.engine.settings import RateLimitSettings
from cli_helpers import ASSISTANTCTL, default_spec, free_port, write_spec

sys.path.insert(0, str(Path(__file__).parent / "engine"))  # the engine's test helpers, shared with tests/engine
from engine_process import RunningEngine, model, start_engine, stop_engine  # noqa: E402
from fake_models import FakeUpstream, start_fake  # noqa: E402

PROMPT = ">>> "


@pytest.fixture(scope="module")
def slow_model() -> Iterator[FakeUpstream]:
    fake, server, thread = start_fake("openai")
    yield fake
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, slow_model: FakeUpstream) -> Iterator[RunningEngine]:
    slow = model("slow", "openai", model="slow-1", api_base=f"{slow_model.url}/v1")
    running = start_engine(tmp_path_factory.mktemp("chat"), [model("local"), slow])
    yield running
    stop_engine(running)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ASSISTANT_API_KEY"}
    return {**env, "NO_COLOR": "1", **extra}


def _spawn(*args: str, **env: str) -> pexpect.spawn:
    """`assistantctl chat ARGS` on a pseudo-terminal; `child.logfile_read` holds all it printed."""
    child = pexpect.spawn(
        ASSISTANTCTL, ["chat", *args], env=_env(**env), encoding="utf-8", timeout=20, dimensions=(40, 200)
    )
    child.logfile_read = io.StringIO()
    return child


def _ended(child: pexpect.spawn) -> str:
    """Wait for `child` to exit; everything it printed."""
    child.expect(pexpect.EOF)
    child.close()
    return child.logfile_read.getvalue()


def _run(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ASSISTANTCTL, *args],
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(**env),
        check=False,
    )


def _conversation_of(engine: RunningEngine, question: str) -> str:
    """The conversation id of the (only) stored user message `question` (anonymous loopback user)."""
    messages = httpx.get(f"{engine.url}/api/v1/history", params={"limit": 200}, timeout=10).json()["messages"]
    found = [m["conversation_id"] for m in messages if m["role"] == "user" and m["content"] == question]
    assert len(found) == 1, messages
    return found[0]


def test_chat_streams_replies_shows_tools_and_keeps_the_conversation(engine: RunningEngine) -> None:
    child = _spawn("--url", engine.url)
    child.expect_exact(PROMPT)
    child.sendline("what is 6*7?")
    child.expect_exact("⚙ calculator ... ✓")
    child.expect_exact("6*7 = 42")
    child.expect_exact(PROMPT)
    child.sendline("what is 2+3?")
    child.expect_exact("2+3 = 5")
    child.expect_exact(PROMPT)
    child.sendline("/new")
    child.expect_exact(PROMPT)
    child.sendline("what is 9-4?")
    child.expect_exact("9-4 = 5")
    child.expect_exact(PROMPT)
    child.sendeof()
    transcript = _ended(child)
    assert child.exitstatus == 0, transcript
    first = _conversation_of(engine, "what is 6*7?")
    assert _conversation_of(engine, "what is 2+3?") == first
    assert _conversation_of(engine, "what is 9-4?") != first


def test_ctrl_c_stops_a_reply_and_returns_to_the_prompt(engine: RunningEngine, slow_model: FakeUpstream) -> None:
    slow_model.reset()
    slow_model.behaviour.chunk_delay, slow_model.behaviour.stream_chunks = 0.2, 200  # 40 s of words
    child = _spawn("--url", engine.url, "--model", "slow")
    child.expect_exact(PROMPT)
    child.sendline("tell me a long story")
    child.expect_exact("Hello from the fake")  # words arrive while the upstream is still streaming
    child.sendintr()
    child.expect_exact("(stopped)")
    child.expect_exact(PROMPT)
    deadline = time.monotonic() + 10  # the engine noticed the client leave and closed the model call
    while slow_model.streams_closed == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (slow_model.streams_closed, slow_model.streams_finished) == (1, 0)
    slow_model.behaviour.chunk_delay, slow_model.behaviour.stream_chunks = 0.0, 5
    child.sendline("a short one, please")
    child.expect_exact("Hello from the fake upstream")
    child.expect_exact(PROMPT)
    child.sendline("/exit")
    transcript = _ended(child)
    assert child.exitstatus == 0 and "Traceback" not in transcript, transcript


def test_one_shot_prints_the_answer_and_exits_0(engine: RunningEngine) -> None:
    result = _run("chat", "--url", engine.url, "what is 6*7?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "6*7 = 42\n"
    assert "⚙ calculator" in result.stderr and "conversation: " in result.stderr
    conversation = result.stderr.rsplit("conversation: ", 1)[1].strip()
    piped = _run("chat", "--url", engine.url, "--conversation", conversation, stdin="what is 10/4?\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "10/4 = 2.5\n"
    assert _conversation_of(engine, "what is 10/4?") == conversation


def test_a_refused_key_is_one_clear_line_and_a_failure(engine: RunningEngine) -> None:
    result = _run("chat", "--url", engine.url, "hello", ASSISTANT_API_KEY="sk-ast-nothere-0000000000")
    assert result.returncode == 1
    assert result.stdout.strip() == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: HTTP 401: ") and "ASSISTANT_API_KEY" in lines[0]
    # interactive: the same line, and the prompt again
    child = _spawn("--url", engine.url, ASSISTANT_API_KEY="sk-ast-nothere-0000000000")
    child.expect_exact(PROMPT)
    child.sendline("hello")
    child.expect_exact("error: HTTP 401: ")
    child.expect_exact(PROMPT)
    child.sendline("/exit")
    transcript = _ended(child)
    assert "Traceback" not in transcript and transcript.count("error: ") == 1, transcript


def test_an_unreachable_assistant_is_one_clear_line_and_a_failure() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _run("chat", "--url", url, "hello")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach {url}: "), result.stderr


def test_rate_limited_says_when_to_retry(tmp_path: Path) -> None:
    limited = RateLimitSettings(requests_per_minute=1, burst=1, key="user")
    running = start_engine(tmp_path / "limited", [model("local")], rate_limit=limited)
    try:
        assert _run("chat", "--url", running.url, "hello").returncode == 0
        result = _run("chat", "--url", running.url, "hello again")
    finally:
        stop_engine(running)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: HTTP 429: ") and "retry after " in lines[0], lines


def test_the_spec_names_where_to_connect(tmp_path: Path, engine: RunningEngine) -> None:
    # The spec's edge port is where chat connects; here the engine itself stands in for nginx there.
    data = default_spec()
    engine_port = int(engine.url.rsplit(":", 1)[1])
    data["deploy"]["ports"] = {"http": engine_port, "engine": free_port(), "https": free_port()}
    data["deploy"]["hosts"].append({"name": "worker", "connection": "local", "roles": ["engine"]})
    # what two engine hosts need: only referenced, `chat` resolves no secret
    data["security"]["edge_secret"] = "${env:EDGE_SECRET}"
    data["deploy"]["state"] = {"history": "postgres", "postgres_dsn": "${env:POSTGRES_DSN}"}
    spec = write_spec(tmp_path, data)
    result = _run("-f", str(spec), "chat", "what is 6*7?")
    assert (result.returncode, result.stdout) == (0, "6*7 = 42\n"), result.stderr
    engine_only = _run("-f", str(spec), "chat", "--host", "worker", "hello")
    assert engine_only.returncode == 1 and "no edge host" in engine_only.stderr
