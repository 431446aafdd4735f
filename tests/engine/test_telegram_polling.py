"""Telegram in polling mode against the real engine and a fake Bot API on loopback.

The engine asks getUpdates for updates (no webhook route), answers each queued update exactly
once, moves the offset past a batch only once it is answered, survives SIGKILL in the middle of a
batch with nothing lost and nothing answered twice, runs one poller whatever the number of
workers, shows "typing" while the model works, answers /start, /reset and /model itself, and never
writes the bot token in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from assistantctl.engine.channels.telegram_commands import RESET_TEXT, START_TEXT
from assistantctl.engine.channels.telegram_media import refusal
from assistantctl.engine.settings import ChannelSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_models import free_port, serve_in_thread
from fake_platforms import FakePlatforms

BOT_TOKEN = "424242:FAKE-POLLING-BOT-TOKEN"
SECRETS = {"channels.telegram.bot_token": BOT_TOKEN}


class SlowModel:
    """An OpenAI-shaped model that sleeps the seconds a message asks for ("wait 2.5: ...") and
    answers "echo: <message>", counting the calls it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls = 0

        async def completions(request: Request) -> Response:
            body = await request.json()
            self.calls += 1
            text = body["messages"][-1]["content"]
            wait = re.match(r"wait ([0-9.]+):", text)
            await asyncio.sleep(float(wait.group(1)) if wait else 0)
            message = {"role": "assistant", "content": f"echo: {text}"}
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return JSONResponse(
                {"id": "x", "object": "chat.completion", "model": "slow", "choices": [choice], "usage": usage}
            )

        self.server, self.thread = serve_in_thread(
            [Route("/v1/chat/completions", completions, methods=["POST"])], self.port
        )


@pytest.fixture(scope="module")
def slow() -> Iterator[SlowModel]:
    running = SlowModel()
    yield running
    running.server.should_exit = True
    running.thread.join(5)


@pytest.fixture
def fake(platforms: FakePlatforms) -> FakePlatforms:
    platforms.reset()
    return platforms


def polling_channel(api_base: str) -> ChannelSettings:
    return ChannelSettings(
        name="telegram",
        secrets={"bot_token": "channels.telegram.bot_token"},
        options={"mode": "polling"},
        api_base=api_base,
    )


def launch(root: Path, fake: FakePlatforms, slow: SlowModel, workers: int = 1) -> RunningEngine:
    models = [
        model("slow", "openai", model="slow", api_base=f"http://127.0.0.1:{slow.port}/v1", read_timeout_seconds=30),
        model("other", "builtin"),
    ]
    return start_engine(root, models, secrets=SECRETS, channels=[polling_channel(fake.url)], workers=workers)


def update(update_id: int, chat: int, text: str) -> dict:
    sender = {"id": chat, "is_bot": False, "first_name": "T"}
    message = {
        "message_id": update_id,
        "from": sender,
        "chat": {"id": chat, "type": "private"},
        "date": 1,
        "text": text,
    }
    return {"update_id": update_id, "message": message}


def replies(fake: FakePlatforms) -> list[dict]:
    return [call["body"] for call in fake.of("telegram")]


def wait_until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def poller_pids(engine: RunningEngine) -> list[int]:
    log = engine.root / "logs" / "engine.log"
    text = log.read_text() if log.exists() else ""
    return [int(pid) for pid in re.findall(r"telegram poller started in worker pid (\d+)", text)]


def kill_tree(pid: int) -> None:
    """SIGKILL the engine's supervisor and its workers, as a power cut would (stopped first, so
    that it cannot respawn a worker in between)."""
    os.kill(pid, signal.SIGSTOP)
    children = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    for child in children:
        os.kill(child, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def test_polling_answers_each_queued_update_once_and_confirms_the_offset(tmp_path, fake, slow) -> None:
    engine = launch(tmp_path / "e", fake, slow)
    try:
        fake.bot.push(*(update(100 + i, 7000 + i, f"hello {i}") for i in range(3)))
        wait_until(lambda: len(replies(fake)) >= 3, what="3 replies")
        time.sleep(0.5)
        assert sorted(r["chat_id"] for r in replies(fake)) == [7000, 7001, 7002]
        assert {r["text"] for r in replies(fake)} == {f"echo: hello {i}" for i in range(3)}
        assert httpx.post(f"{engine.url}/webhooks/telegram", json={}).status_code == 404  # no webhook route
        wait_until(lambda: any(c["body"].get("offset") == 103 for c in fake.bot.of("getUpdates")), what="offset 103")
        first = fake.bot.of("getUpdates")[0]["body"]
        assert first["allowed_updates"] == ["message"] and first["timeout"] > 0
    finally:
        stop_engine(engine)
    assert BOT_TOKEN not in (engine.root / "logs" / "engine.log").read_text()


def test_sigkill_in_the_middle_of_a_batch_loses_nothing_and_answers_nothing_twice(tmp_path, fake, slow) -> None:
    root = tmp_path / "e"
    engine = launch(root, fake, slow)
    quick = [update(200 + i, 8000 + i, f"quick {i}") for i in range(3)]
    stuck = [update(210 + i, 8100 + i, f"wait 5: slow {i}") for i in range(3)]
    calls_before = slow.calls  # the model is the module's: count this test's calls only
    try:
        fake.bot.push(*quick, *stuck)
        wait_until(lambda: len(replies(fake)) >= 3, what="the quick replies")
        wait_until(lambda: slow.calls - calls_before >= 6, what="the slow ones with the model")
        assert len(replies(fake)) == 3  # and still there: the kill comes in the middle of the batch
        kill_tree(engine.process.pid)
        engine.process.wait(10)
    finally:
        if engine.process.poll() is None:
            stop_engine(engine)
    later = [update(220 + i, 8200 + i, f"later {i}") for i in range(2)]
    fake.bot.push(*later)  # queued while no engine runs
    restarted = launch(root, fake, slow)
    try:
        wanted = {u["message"]["chat"]["id"] for u in (*quick, *stuck, *later)}
        wait_until(lambda: {r["chat_id"] for r in replies(fake)} >= wanted, timeout=30, what="every update answered")
        time.sleep(1.0)
        counts = Counter(r["chat_id"] for r in replies(fake))
        assert counts == Counter(wanted), f"answered more than once: {[c for c, n in counts.items() if n > 1]}"
    finally:
        stop_engine(restarted)


def test_two_workers_run_one_poller_and_answer_once(tmp_path, fake, slow) -> None:
    engine = launch(tmp_path / "e", fake, slow, workers=2)
    try:
        fake.bot.push(*(update(300 + i, 9000 + i, f"two {i}") for i in range(4)))
        wait_until(lambda: len(replies(fake)) >= 4, what="4 replies")
        time.sleep(6)  # longer than the lock retry: a second poller would have started by now
        assert len(poller_pids(engine)) == 1
        assert sorted(r["chat_id"] for r in replies(fake)) == [9000, 9001, 9002, 9003]
    finally:
        stop_engine(engine)


def test_typing_is_shown_while_the_model_works(tmp_path, fake, slow) -> None:
    engine = launch(tmp_path / "e", fake, slow)
    try:
        fake.bot.push(update(400, 9100, "wait 5: think hard"))
        wait_until(lambda: len(replies(fake)) >= 1, what="the reply")
        actions = [c["body"] for c in fake.bot.of("sendChatAction")]
        assert len(actions) >= 2 and all(a == {"chat_id": 9100, "action": "typing"} for a in actions)
        time.sleep(4.5)
        assert len(fake.bot.of("sendChatAction")) == len(actions)  # stopped with the reply
    finally:
        stop_engine(engine)


def history_rows(engine: RunningEngine, user: str) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "history.sqlite3")) as db:
        query = "SELECT conversation_id, role FROM messages WHERE user = ? ORDER BY rowid"
        return db.execute(query, (user,)).fetchall()


def test_start_reset_and_model_commands(tmp_path, fake, slow) -> None:
    engine = launch(tmp_path / "e", fake, slow)
    chat = 9200
    script = ["/start", "one", "/reset", "two", "/model", "/model nosuch", "/model other", "three"]
    try:
        for i, text in enumerate(script):
            fake.bot.push(update(500 + i, chat, text))
            wait_until(lambda n=i + 1: len(replies(fake)) >= n, what=f"reply to {text}")
        texts = [r["text"] for r in replies(fake)]
        assert texts[0] == START_TEXT
        assert texts[1] == "echo: one" and texts[2] == RESET_TEXT and texts[3] == "echo: two"
        assert texts[4].startswith("Current model: slow.") and "other" in texts[4]
        assert texts[5].startswith("There is no model 'nosuch'")
        assert texts[6] == "This chat now uses other." and not texts[7].startswith("echo:")  # the builtin answered
        conversations = [c for c, role in history_rows(engine, f"telegram:{chat}") if role == "user"]
        assert len(conversations) == 3 and conversations[0] != conversations[1] == conversations[2]
    finally:
        stop_engine(engine)


def test_a_photo_gets_the_polite_reply_when_polling(tmp_path, fake, slow) -> None:
    engine = launch(tmp_path / "e", fake, slow)
    try:
        photo = update(600, 9300, "x")
        del photo["message"]["text"]
        photo["message"]["photo"] = [{"file_id": "AgAD", "width": 90, "height": 90}]
        fake.bot.push(photo)
        wait_until(lambda: len(replies(fake)) >= 1, what="the polite reply")
        assert replies(fake) == [{"chat_id": 9300, "text": refusal(images=False)}]
    finally:
        stop_engine(engine)


def test_a_refused_bot_token_is_logged_without_the_token(tmp_path, fake, slow) -> None:
    fake.bot.webhook = {"url": "https://example.invalid/hook"}  # getUpdates answers 409 Conflict
    engine = launch(tmp_path / "e", fake, slow)
    try:
        wait_until(lambda: "telegram getUpdates failed" in (engine.root / "logs" / "engine.log").read_text())
    finally:
        stop_engine(engine)
    log = (engine.root / "logs" / "engine.log").read_text()
    assert "409" in log or "Conflict" in log
    assert BOT_TOKEN not in log and BOT_TOKEN.split(":")[1] not in log
    assert json.dumps(BOT_TOKEN)[1:-1] not in (engine.root / "stderr.log").read_text()


def test_one_chats_messages_are_answered_in_order_and_other_chats_meanwhile(tmp_path, fake, slow) -> None:
    engine = launch(tmp_path / "ordered", fake, slow)
    try:
        fake.bot.push(update(9100, 910, "wait 2: first"), update(9101, 910, "second"), update(9102, 911, "other"))
        wait_until(lambda: len(replies(fake)) >= 3, what="3 replies")
        texts = [r["text"] for r in replies(fake)]
        assert texts.index("echo: wait 2: first") < texts.index("echo: second"), texts
        assert texts[0] == "echo: other", texts  # another chat is not held up by the slow one
    finally:
        stop_engine(engine)
