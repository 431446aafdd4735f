"""One Telegram poller per deployment when the history is in PostgreSQL: two engine processes
("nodes", each with its own data_dir and port) share one real PostgreSQL on loopback; exactly one
polls, the other takes over when the first is SIGKILLed mid-batch, and every update is answered
exactly once. Validation accepts polling on several engine hosts only with that shared history."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from assistantctl.schema.loader import SpecError, parse_spec
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_platforms import FakePlatforms
from postgres_server import Service, fetch
from telegram_helpers import (
    POLLING_SECRETS,
    WEBHOOK_SECRETS,
    SlowModel,
    kill_tree,
    polling_channel,
    post,
    replies,
    update,
    wait_until,
    webhook_channel,
)

pytestmark = pytest.mark.slow

STARTED = "telegram poller started"


def node(root: Path, pg: Service, fake: FakePlatforms, slow: SlowModel) -> RunningEngine:
    models = [
        model("slow", "openai", model="slow", api_base=f"http://127.0.0.1:{slow.port}/v1", read_timeout_seconds=30)
    ]
    return start_engine(
        root,
        models,
        secrets={**POLLING_SECRETS, "pg": pg.url},
        channels=[polling_channel(fake.url)],
        history_backend="postgres",
        history_dsn_secret="pg",
    )


def polls(engine: RunningEngine) -> bool:
    log = engine.root / "logs" / "engine.log"
    return log.exists() and STARTED in log.read_text()


def chats(*updates: dict) -> Counter:
    return Counter(u["message"]["chat"]["id"] for u in updates)


def test_two_nodes_run_one_poller_and_the_other_takes_over_after_a_sigkill(
    tmp_path, postgres, fresh_platforms, slow_model
) -> None:
    a, b = (node(tmp_path / name, postgres, fresh_platforms, slow_model) for name in ("a", "b"))
    nodes = [a, b]
    try:
        first = [update(1000 + i, 11000 + i, f"first {i}") for i in range(4)]
        fresh_platforms.bot.push(*first)
        wait_until(lambda: len(replies(fresh_platforms)) >= 4, what="the first replies")
        time.sleep(6)  # longer than the lease retry: a second poller would have started by now
        assert [polls(a), polls(b)].count(True) == 1
        leader, other = (a, b) if polls(a) else (b, a)
        calls = slow_model.calls
        stuck = [update(1010 + i, 11100 + i, f"wait 6: stuck {i}") for i in range(3)]
        fresh_platforms.bot.push(*stuck)
        wait_until(lambda: slow_model.calls >= calls + 3, what="the stuck updates with the model")
        kill_tree(leader.process.pid)
        leader.process.wait(10)
        nodes.remove(leader)
        later = [update(1020 + i, 11200 + i, f"later {i}") for i in range(2)]
        fresh_platforms.bot.push(*later)
        wanted = chats(*first, *stuck, *later)
        wait_until(
            lambda: set(chats_answered(fresh_platforms)) >= set(wanted), timeout=60, what="every update answered"
        )
        time.sleep(1.0)
        assert chats_answered(fresh_platforms) == wanted, "an update was answered twice or not at all"
        assert polls(other)
        stored = asyncio.run(fetch(postgres.url, "SELECT next_update FROM telegram_offset"))
        assert [row[0] for row in stored] == [1022]
    finally:
        for running in nodes:
            stop_engine(running)


def chats_answered(fake: FakePlatforms) -> Counter:
    return Counter(r["chat_id"] for r in replies(fake))


SPEC = """version: 2
models:
  default: local
  providers:
    local: {provider: builtin}
channels:
  telegram:
    enabled: true
    bot_token: ${env:TG_TOKEN}
    mode: polling
deploy:
  hosts:
    - {name: a, address: 10.0.0.1}
    - {name: b, address: 10.0.0.2}
"""


def test_polling_on_two_engine_hosts_is_accepted_only_with_the_history_in_postgres() -> None:
    shared = SPEC + '  state: {history: postgres, postgres_dsn: "${env:PG_DSN}"}\n'
    assert parse_spec(shared, "assistant.yaml").channels.telegram.mode == "polling"
    with pytest.raises(SpecError) as error:
        parse_spec(SPEC, "assistant.yaml")
    rendered = error.value.render()
    assert "history: postgres" in rendered
    # Refused where it is written; a second host that is only an edge runs no poller.
    assert "assistant.yaml:10:" in rendered and "one poller per engine host" in rendered and "webhook" in rendered
    one_engine = SPEC.replace("{name: b, address: 10.0.0.2}", "{name: b, address: 10.0.0.2, roles: [edge]}")
    assert parse_spec(one_engine).channels.telegram.mode == "polling"


def test_by_webhook_a_chats_model_and_reset_hold_on_every_node(tmp_path, postgres, fresh_platforms, slow_model) -> None:
    # The edges balance webhook updates across the engine nodes: /model on one must hold on the other.
    channel = webhook_channel(fresh_platforms.url)
    models = [model("slow", "openai", model="slow", api_base=f"http://127.0.0.1:{slow_model.port}/v1"), model("other")]
    shared = {"history_backend": "postgres", "history_dsn_secret": "pg", "channels": [channel]}
    a = start_engine(tmp_path / "hook-a", models, secrets={**WEBHOOK_SECRETS, "pg": postgres.url}, **shared)
    b = start_engine(tmp_path / "hook-b", models, secrets={**WEBHOOK_SECRETS, "pg": postgres.url}, **shared)
    try:
        chat = 12300
        assert post(a, update(1300, chat, "/model other")) == 200
        wait_until(lambda: len(replies(fresh_platforms)) >= 1, what="the /model reply")
        assert post(b, update(1301, chat, "on the other node")) == 200
        wait_until(lambda: len(replies(fresh_platforms)) >= 2, what="the reply from the other node")
        answers = replies(fresh_platforms)
        assert not answers[1]["text"].startswith("echo:"), answers  # "other", not "slow"
    finally:
        stop_engine(a)
        stop_engine(b)
