"""JWT, allowed users, rate limits, PII masking and encryption at rest."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import jwt
import pytest

from assistantctl.engine.settings import RateLimitSettings, SecuritySettings
from engine_process import RunningEngine, StartEngine, model

JWT_KEY = "test-jwt-signing-key-of-32-bytes!"


def token(sub: str, **claims: object) -> dict[str, str]:
    value = jwt.encode({"sub": sub, "exp": int(time.time()) + 60, **claims}, JWT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def engine(engine_factory: StartEngine) -> RunningEngine:
    security = SecuritySettings(
        anonymous="off",
        jwt_secret="security.jwt.secret",
        allowed_users=["ann", "bob"],
        history_key_secret="security.history.key",
        pii_masking=["email", "phone", "credit_card", "ip_address"],
    )
    return engine_factory(
        [model("local")],
        security=security,
        secrets={"security.jwt.secret": JWT_KEY, "security.history.key": "correct horse battery staple"},
        rate_limit=RateLimitSettings(requests_per_minute=6, burst=3, key="user"),  # one back every 10 s
    )


def test_jwt_is_required_and_its_subject_is_the_user(engine: RunningEngine) -> None:
    with engine.client() as client:
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 401
        forged = jwt.encode({"sub": "ann"}, "another-key-also-32-bytes-long!!", algorithm="HS256")
        bad = client.post("/api/v1/chat", json={"message": "hi"}, headers={"Authorization": f"Bearer {forged}"})
        assert bad.status_code == 401
        claimed = client.post("/api/v1/chat", json={"message": "hi", "user": "bob"}, headers=token("ann"))
        assert claimed.status_code == 403  # a token's holder cannot speak as someone else
        ok = client.post("/api/v1/chat", json={"message": "hi", "user": "ann"}, headers=token("ann"))
        assert ok.status_code == 200
        assert client.get("/api/v1/history", params={"user": "bob"}, headers=token("ann")).status_code == 403
        history = client.get("/api/v1/history", headers=token("ann")).json()
        others = client.get("/api/v1/history", headers=token("bob")).json()
    assert history["user"] == "ann" and len(history["messages"]) == 2
    assert others["user"] == "bob" and others["messages"] == []


def test_users_outside_the_allowed_list_get_403(engine: RunningEngine) -> None:
    with engine.client() as client:
        assert client.post("/api/v1/chat", json={"message": "hi"}, headers=token("mallory")).status_code == 403


def test_rate_limit_answers_429_and_counts_it(engine: RunningEngine) -> None:
    with engine.client() as client:
        codes = [
            client.post("/api/v1/chat", json={"message": "hi"}, headers=token("bob")).status_code for _ in range(5)
        ]
        other = client.post("/api/v1/chat", json={"message": "hi"}, headers=token("ann"))
        limited = client.post("/api/v1/chat", json={"message": "hi"}, headers=token("bob"))
    assert codes == [200, 200, 200, 429, 429]
    assert other.status_code == 200  # buckets are per user
    assert int(limited.headers["retry-after"]) >= 1
    assert engine.metric("assistant_rate_limited_total", route="/api/v1/chat") == 3


def test_history_is_masked_and_encrypted_at_rest(engine: RunningEngine) -> None:
    message = "reach me at ann@example.com or +1 555 123 4567, card 4111 1111 1111 1111, host 10.1.2.3"
    with engine.client() as client:
        answer = client.post("/api/v1/chat", json={"message": message}, headers=token("ann")).json()
        stored = client.get(
            "/api/v1/history", params={"conversation_id": answer["conversation_id"]}, headers=token("ann")
        ).json()["messages"]
    assert "ann@example.com" in answer["reply"]  # the model itself sees the real text
    question = stored[-1]["content"]
    assert question == "reach me at [email] or [phone], card [credit_card], host [ip_address]"
    rows = (
        sqlite3.connect(Path(engine.settings().data_dir) / "history.sqlite3")
        .execute("SELECT content FROM messages")
        .fetchall()
    )
    assert rows and all(content.startswith("gAAAAA") for (content,) in rows)  # Fernet tokens
    assert not any("reach me" in content for (content,) in rows)
    assert not any("ann@example.com" in line for line in engine.log_lines())


def test_admin_with_jwt_needs_the_admin_claim(engine: RunningEngine) -> None:
    with engine.client() as client:
        denied = client.put("/admin/v1/default-model", json={"model": "local"}, headers=token("ann"))
        allowed = client.put("/admin/v1/default-model", json={"model": "local"}, headers=token("ann", admin=True))
    assert (denied.status_code, allowed.status_code) == (403, 200)
