"""Telegram in polling mode against the real engine and a fake Bot API on loopback.

The engine asks getUpdates for updates (no webhook route), answers each queued update exactly
once, keeps polling while replies run (another chat's later message is answered meanwhile),
survives SIGKILL in the middle of a batch with nothing lost and nothing answered twice (what was
received is kept as pending until answered), runs one poller whatever the number of workers, shows
"typing" while the model works, answers /start, /reset and /model itself, and never writes the bot
token in its log.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx

from assistantctl.engine.channels.telegram_commands import RESET_TEXT, START_TEXT
from assistantctl.engine.channels.telegram_media import refusal
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_platforms import FakePlatforms
from telegram_helpers import (
    POLLING_SECRETS,
    POLLING_TOKEN,
    SlowModel,
    history_rows,
    kill_tree,
    polling_channel,
    replies,
    update,
    wait_until,
)


def launch(root: Path, fake: FakePlatforms, slow: SlowModel, workers: int = 1) -> RunningEngine:
    models = [
        model("slow", "openai", model="slow", api_base=f"http://127.0.0.1:{slow.port}/v1", read_timeout_seconds=30),
        model("other", "builtin"),
    ]
    return start_engine(root, models, secrets=POLLING_SECRETS, channels=[polling_channel(fake.url)], workers=workers)


def pending_updates(engine: RunningEngine) -> set[int]:
    """The update ids the poller holds as received and not yet answered (telegram_state.py)."""
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "telegram.sqlite3")) as db:
        return {row[0] for row in db.execute("SELECT update_id FROM pending")}


def poller_pids(engine: RunningEngine) -> list[int]:
    log = engine.root / "logs" / "engine.log"
    text = log.read_text() if log.exists() else ""
    return [int(pid) for pid in re.findall(r"telegram poller started in worker pid (\d+)", text)]


def test_polling_answers_each_queued_update_once_and_confirms_the_offset(tmp_path, fresh_platforms, slow_model) -> None:
    engine = launch(tmp_path / "e", fresh_platforms, slow_model)
    try:
        fresh_platforms.bot.push(*(update(100 + i, 7000 + i, f"hello {i}") for i in range(3)))
        wait_until(lambda: len(replies(fresh_platforms)) >= 3, what="3 replies")
        time.sleep(0.5)
        assert sorted(r["chat_id"] for r in replies(fresh_platforms)) == [7000, 7001, 7002]
        assert {r["text"] for r in replies(fresh_platforms)} == {f"echo: hello {i}" for i in range(3)}
        assert httpx.post(f"{engine.url}/webhooks/telegram", json={}).status_code == 404  # no webhook route
        wait_until(
            lambda: any(c["body"].get("offset") == 103 for c in fresh_platforms.bot.of("getUpdates")), what="offset 103"
        )
        first = fresh_platforms.bot.of("getUpdates")[0]["body"]
        assert first["allowed_updates"] == ["message"] and first["timeout"] > 0
    finally:
        stop_engine(engine)
    assert POLLING_TOKEN not in (engine.root / "logs" / "engine.log").read_text()


def test_sigkill_in_the_middle_of_a_batch_loses_nothing_and_answers_nothing_twice(
    tmp_path, fresh_platforms, slow_model
) -> None:
    root = tmp_path / "e"
    engine = launch(root, fresh_platforms, slow_model)
    quick = [update(200 + i, 8000 + i, f"quick {i}") for i in range(3)]
    stuck = [update(210 + i, 8100 + i, f"wait 5: slow {i}") for i in range(3)]
    calls_before = slow_model.calls  # the model is the module's: count this test's calls only
    try:
        fresh_platforms.bot.push(*quick, *stuck)
        wait_until(lambda: len(replies(fresh_platforms)) >= 3, what="the quick replies")
        wait_until(lambda: slow_model.calls - calls_before >= 6, what="the slow ones with the model")
        # the kill must not fall between a quick reply reaching Telegram and its row leaving
        # `pending`: that one window (see engine/channels/telegram_poll.py) would repeat it
        wait_until(lambda: pending_updates(engine) == {210, 211, 212}, what="only the slow ones pending")
        assert len(replies(fresh_platforms)) == 3  # and still there: the kill comes in the middle of the batch
        kill_tree(engine.process.pid)
        engine.process.wait(10)
    finally:
        if engine.process.poll() is None:
            stop_engine(engine)
    later = [update(220 + i, 8200 + i, f"later {i}") for i in range(2)]
    fresh_platforms.bot.push(*later)  # queued while no engine runs
    restarted = launch(root, fresh_platforms, slow_model)
    try:
        wanted = {u["message"]["chat"]["id"] for u in (*quick, *stuck, *later)}
        wait_until(
            lambda: {r["chat_id"] for r in replies(fresh_platforms)} >= wanted, timeout=30, what="every update answered"
        )
        time.sleep(1.0)
        counts = Counter(r["chat_id"] for r in replies(fresh_platforms))
        assert counts == Counter(wanted), f"answered more than once: {[c for c, n in counts.items() if n > 1]}"
    finally:
        stop_engine(restarted)


def test_two_workers_run_one_poller_and_answer_once(tmp_path, fresh_platforms, slow_model) -> None:
    engine = launch(tmp_path / "e", fresh_platforms, slow_model, workers=2)
    try:
        fresh_platforms.bot.push(*(update(300 + i, 9000 + i, f"two {i}") for i in range(4)))
        wait_until(lambda: len(replies(fresh_platforms)) >= 4, what="4 replies")
        time.sleep(6)  # longer than the lock retry: a second poller would have started by now
        assert len(poller_pids(engine)) == 1
        assert sorted(r["chat_id"] for r in replies(fresh_platforms)) == [9000, 9001, 9002, 9003]
    finally:
        stop_engine(engine)


def test_typing_is_shown_while_the_model_works(tmp_path, fresh_platforms, slow_model) -> None:
    engine = launch(tmp_path / "e", fresh_platforms, slow_model)
    try:
        fresh_platforms.bot.push(update(400, 9100, "wait 5: think hard"))
        wait_until(lambda: len(replies(fresh_platforms)) >= 1, what="the reply")
        actions = [c["body"] for c in fresh_platforms.bot.of("sendChatAction")]
        assert len(actions) >= 2 and all(a == {"chat_id": 9100, "action": "typing"} for a in actions)
        time.sleep(4.5)
        assert len(fresh_platforms.bot.of("sendChatAction")) == len(actions)  # stopped with the reply
    finally:
        stop_engine(engine)


def test_start_reset_and_model_commands(tmp_path, fresh_platforms, slow_model) -> None:
    engine = launch(tmp_path / "e", fresh_platforms, slow_model)
    chat = 9200
    script = ["/start", "one", "/reset", "two", "/model", "/model nosuch", "/model other", "three"]
    try:
        for i, text in enumerate(script):
            fresh_platforms.bot.push(update(500 + i, chat, text))
            wait_until(lambda n=i + 1: len(replies(fresh_platforms)) >= n, what=f"reply to {text}")
        texts = [r["text"] for r in replies(fresh_platforms)]
        assert texts[0] == START_TEXT
        assert texts[1] == "echo: one" and texts[2] == RESET_TEXT and texts[3] == "echo: two"
        assert texts[4].startswith("Current model: slow.") and "other" in texts[4]
        assert texts[5].startswith("There is no model 'nosuch'")
        assert texts[6] == "This chat now uses other." and not texts[7].startswith("echo:")  # the builtin answered
        conversations = [c for c, role in history_rows(engine, f"telegram:{chat}") if role == "user"]
        assert len(conversations) == 3 and conversations[0] != conversations[1] == conversations[2]
    finally:
        stop_engine(engine)


def test_a_photo_gets_the_polite_reply_when_polling(tmp_path, fresh_platforms, slow_model) -> None:
    engine = launch(tmp_path / "e", fresh_platforms, slow_model)
    try:
        photo = update(600, 9300, "x")
        del photo["message"]["text"]
        photo["message"]["photo"] = [{"file_id": "AgAD", "width": 90, "height": 90}]
        fresh_platforms.bot.push(photo)
        wait_until(lambda: len(replies(fresh_platforms)) >= 1, what="the polite reply")
        assert replies(fresh_platforms) == [{"chat_id": 9300, "text": refusal(images=False)}]
    finally:
        stop_engine(engine)


def test_a_refused_bot_token_is_logged_without_the_token(tmp_path, fresh_platforms, slow_model) -> None:
    fresh_platforms.bot.webhook = {"url": "https://example.invalid/hook"}  # getUpdates answers 409 Conflict
    engine = launch(tmp_path / "e", fresh_platforms, slow_model)
    try:
        wait_until(lambda: "telegram getUpdates failed" in (engine.root / "logs" / "engine.log").read_text())
    finally:
        stop_engine(engine)
    log = (engine.root / "logs" / "engine.log").read_text()
    assert "409" in log or "Conflict" in log
    assert POLLING_TOKEN not in log and POLLING_TOKEN.split(":")[1] not in log
    assert json.dumps(POLLING_TOKEN)[1:-1] not in (engine.root / "stderr.log").read_text()


def test_one_chats_messages_are_answered_in_order_and_other_chats_meanwhile(
    tmp_path, fresh_platforms, slow_model
) -> None:
    engine = launch(tmp_path / "ordered", fresh_platforms, slow_model)
    try:
        fresh_platforms.bot.push(
            update(9100, 910, "wait 2: first"), update(9101, 910, "second"), update(9102, 911, "other")
        )
        wait_until(lambda: len(replies(fresh_platforms)) >= 3, what="3 replies")
        texts = [r["text"] for r in replies(fresh_platforms)]
        assert texts.index("echo: wait 2: first") < texts.index("echo: second"), texts
        assert texts[0] == "echo: other", texts  # another chat is not held up by the slow one
    finally:
        stop_engine(engine)


def test_another_chats_later_message_is_answered_while_a_slow_reply_runs(tmp_path, fresh_platforms, slow_model) -> None:
    engine = launch(tmp_path / "pipelined", fresh_platforms, slow_model)
    try:
        calls = slow_model.calls
        fresh_platforms.bot.push(update(9300, 930, "wait 4: slow"))
        wait_until(lambda: slow_model.calls > calls, what="the slow reply's model call")
        fresh_platforms.bot.push(update(9301, 931, "quick"))  # a later poll's update
        wait_until(lambda: len(replies(fresh_platforms)) >= 2, what="2 replies")
        assert [r["text"] for r in replies(fresh_platforms)] == ["echo: quick", "echo: wait 4: slow"]
        asked = lambda: [c["body"].get("offset") for c in fresh_platforms.bot.of("getUpdates")]  # noqa: E731
        wait_until(lambda: 9302 in asked(), what="a poll confirming both")
    finally:
        stop_engine(engine)
