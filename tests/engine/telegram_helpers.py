"""What the Telegram tests share: a slow OpenAI-shaped model, the polling and webhook channels with
their secrets, Bot API updates to queue or post, and ways to read what the engine answered.

The fixtures over these (`slow_model`, `fresh_platforms`) are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from assistantctl.engine.settings import ChannelSettings
from engine_process import RunningEngine
from fake_models import free_port, serve_in_thread
from fake_platforms import FakePlatforms

POLLING_TOKEN = "424242:FAKE-POLLING-BOT-TOKEN"
POLLING_SECRETS = {"channels.telegram.bot_token": POLLING_TOKEN}
WEBHOOK_TOKEN, WEBHOOK_SECRET = "515151:FAKE-WEBHOOK-CHAT-TOKEN", "FAKE-WEBHOOK-CHAT-SECRET"
WEBHOOK_SECRETS = {"channels.telegram.bot_token": WEBHOOK_TOKEN, "channels.telegram.webhook_secret": WEBHOOK_SECRET}


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


def polling_channel(api_base: str) -> ChannelSettings:
    """Telegram in polling mode against the Bot API at `api_base`; its token is in POLLING_SECRETS."""
    return ChannelSettings(
        name="telegram",
        secrets={"bot_token": "channels.telegram.bot_token"},
        options={"mode": "polling"},
        api_base=api_base,
    )


def webhook_channel(api_base: str) -> ChannelSettings:
    """Telegram by webhook at /webhooks/telegram; its token and webhook secret are named as in
    WEBHOOK_SECRETS."""
    return ChannelSettings(
        name="telegram",
        path="/webhooks/telegram",
        secrets={"bot_token": "channels.telegram.bot_token", "webhook_secret": "channels.telegram.webhook_secret"},
        api_base=api_base,
    )


def post(engine: RunningEngine, body: dict) -> int:
    """Posts an update to the engine's webhook as Telegram would with WEBHOOK_SECRET; the status."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
    return httpx.post(f"{engine.url}/webhooks/telegram", json=body, headers=headers, timeout=10).status_code


def update(update_id: int, chat: int, text: str) -> dict:
    """A Bot API update: a private text message from `chat`."""
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
    """The bodies of what the engine sent to Telegram, in order."""
    return [call["body"] for call in fake.of("telegram")]


def wait_until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def history_rows(engine: RunningEngine, user: str) -> list[tuple[str, str]]:
    """(conversation_id, role) of `user`'s messages in the engine's SQLite history, in order."""
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "history.sqlite3")) as db:
        query = "SELECT conversation_id, role FROM messages WHERE user = ? ORDER BY rowid"
        return db.execute(query, (user,)).fetchall()


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
