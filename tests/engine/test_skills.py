"""Skills: pre hooks shape what the model sees, post hooks what users and history see."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from assistantctl.engine.settings import SkillSettings
from assistantctl.engine.skills.plugins import load_skills
from engine_process import StartEngine, as_user, model
from fake_models import FakeUpstream

PLUGINS = {"PYTHONPATH": str(Path(__file__).parent)}


def skill(name: str, entrypoint: str, hooks: list[str], timeout: float = 5, **config: object) -> SkillSettings:
    return SkillSettings(name=name, entrypoint=entrypoint, hooks=hooks, timeout_seconds=timeout, config=config)


def test_a_system_prompt_reaches_the_model_first(engine_factory: StartEngine, openai_fake: FakeUpstream) -> None:
    openai_fake.reset()
    persona = skill("persona", "builtin:system_prompt", ["pre"], text="You are terse.")
    engine = engine_factory([model("cloud", "openai", api_base=f"{openai_fake.url}/v1")], skills=[persona])
    with engine.client() as client:
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
        with client.stream(
            "POST", "/v1/chat/completions", json={"messages": [{"role": "user", "content": "yo"}], "stream": True}
        ) as streamed:
            assert streamed.status_code == 200 and "data:" in streamed.read().decode()
    sent = [call["body"]["messages"] for call in openai_fake.calls]
    assert sent == [
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "yo"}],
    ]


def test_post_hooks_shape_replies_history_and_streams_in_order(engine_factory: StartEngine) -> None:
    hooks = [
        skill("hush", "builtin:redact", ["post"], words="secret-plan"),
        skill("shout", "skill_plugins:Shout", ["post"], suffix="!"),
    ]
    engine = engine_factory([model("local")], skills=hooks, env=PLUGINS)
    with engine.client() as client:
        reply = client.post("/api/v1/chat", json={"message": "tell me the Secret-Plan"}, headers=as_user("ann")).json()
        assert "[REDACTED]" in reply["reply"] and "SECRET-PLAN" not in reply["reply"]
        assert reply["reply"].endswith("!") and reply["reply"] == reply["reply"].upper()
        history = client.get("/api/v1/history", headers=as_user("ann")).json()["messages"]
        assert history[0]["role"] == "assistant" and history[0]["content"] == reply["reply"]
        with client.stream("POST", "/api/v1/chat/stream", json={"message": "the secret-plan again"}) as streamed:
            body = streamed.read().decode()
    assert "[REDACTED]" in body and "secret-plan" not in body.lower().replace("[redacted]", "")


def test_a_failing_or_stuck_hook_fails_the_request_and_stores_nothing(engine_factory: StartEngine) -> None:
    hooks = [skill("stuck", "skill_plugins:Stuck", ["pre"], timeout=0.3, seconds=5)]
    engine = engine_factory([model("local")], skills=hooks, env=PLUGINS, name="stuck")
    with engine.client() as client:
        answer = client.post("/api/v1/chat", json={"message": "hi"}, headers=as_user("bob"))
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "skill_failed"
        assert "stuck" in answer.json()["error"]["message"]
        assert client.get("/api/v1/history", headers=as_user("bob")).json()["messages"] == []
    broken = engine_factory(
        [model("local")], skills=[skill("broken", "skill_plugins:Broken", ["pre"])], env=PLUGINS, name="broken"
    )
    answer = httpx.post(f"{broken.url}/api/v1/chat", json={"message": "hi"}, timeout=10)
    assert answer.status_code == 502 and "hunter2" not in answer.text
    assert "skill 'broken' failed: RuntimeError" in answer.json()["error"]["message"]


def test_a_skill_that_cannot_load_stops_the_engine_at_start(engine_factory: StartEngine) -> None:
    with pytest.raises(RuntimeError, match="skill 'ghost' .* cannot be loaded"):
        engine_factory([model("local")], skills=[skill("ghost", "no_such_module:Thing", ["pre"])])


def test_a_hook_the_skill_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="skill 'limit' .* has no pre\\(\\) hook"):
        load_skills([skill("limit", "builtin:reply_limit", ["pre"], max_chars=10)])


async def test_reply_limit_cuts_long_replies() -> None:
    skills = load_skills([skill("limit", "builtin:reply_limit", ["post"], max_chars=5)])
    assert await skills.post("short") == "short"
    assert await skills.post("much longer") == "much…"
