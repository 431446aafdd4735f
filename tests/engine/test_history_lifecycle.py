"""The life cycle of conversation history on a real engine: key rotation, retention, listing and
deleting conversations, deleting a user (free pages included), and the admin reading a channel user.

SQLite and PostgreSQL both; the PostgreSQL server is the throwaway cluster of test_shared_state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import yaml
from cryptography.fernet import Fernet
from jsonschema import Draft202012Validator

from assistantctl.engine.security.crypto import Keyring, keyring
from assistantctl.engine.settings import HistoryKeySettings, SecuritySettings
from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings
from assistantctl.schema.loader import parse_spec
from engine_process import RunningEngine, StartEngine, model, stop_engine
from postgres_server import Service
from postgres_server import fetch as _fetch

JWT_KEY = "lifecycle-jwt-signing-key-32-bytes"
KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()
DAY = 86_400.0


def token(sub: str, **claims: object) -> dict[str, str]:
    value = jwt.encode({"sub": sub, "exp": int(time.time()) + 600, **claims}, JWT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {value}"}


def admin() -> dict[str, str]:
    """An admin's token, made when it is used: a module-level one expires if the module runs late."""
    return token("root", admin=True)


def _security(keys: list[str] | None = None, single: bool = False, **extra: Any) -> SecuritySettings:
    """JWT on; `keys` the keyring by id ("a" -> KEY_A, "b" -> KEY_B), or the old one-key form."""
    if single:
        return SecuritySettings(jwt_secret="jwt", history_key_secret="ka", **extra)
    ring = [HistoryKeySettings(id=k, secret=f"k{k}") for k in keys or []]
    return SecuritySettings(jwt_secret="jwt", history_keys=ring, **extra)


SECRETS = {"jwt": JWT_KEY, "ka": KEY_A, "kb": KEY_B}


def _start(factory: StartEngine, security: SecuritySettings, **kwargs: Any) -> RunningEngine:
    return factory([model("local")], secrets=SECRETS, security=security, **kwargs)


def _db(engine: RunningEngine) -> Path:
    return Path(engine.settings().data_dir) / "history.sqlite3"


def _all_messages(client: httpx.Client, headers: dict[str, str], user: str | None = None) -> list[dict[str, Any]]:
    items, before = [], None
    while True:
        params: dict[str, Any] = {
            "limit": 200,
            **({"before": before} if before else {}),
            **({"user": user} if user else {}),
        }
        page = client.get("/api/v1/history", params=params, headers=headers)
        assert page.status_code == 200, page.text
        items += page.json()["messages"]
        before = page.json()["next_before"]
        if before is None:
            return items


def _legacy_rows(count: int, user: str, sealed_with: str | None) -> tuple[list[tuple], dict[str, str]]:
    """Rows as the engine stored them before key ids (key_id NULL): Fernet tokens, or plaintext."""
    now, fernet = time.time(), Fernet(sealed_with.encode()) if sealed_with else None
    conversation, rows, texts = f"legacy-{uuid.uuid4().hex}", [], {}
    for i in range(count):
        text = f"legacy message {i} {uuid.uuid4().hex}"
        stored = fernet.encrypt(text.encode()).decode() if fernet else text
        rows.append((f"m-{uuid.uuid4().hex}", conversation, user, "user", stored, now - count + i))
        texts[rows[-1][0]] = text
    return rows, texts


def _insert_sqlite(path: Path, rows: list[tuple], conversation_created: float | None = None) -> None:
    db = sqlite3.connect(path, timeout=10)
    with db:
        for conversation, user in {(r[1], r[2]) for r in rows}:
            created = conversation_created or min(r[5] for r in rows)
            db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?)", (conversation, user, created, created))
        db.executemany(
            "INSERT INTO messages (id, conversation_id, user, role, content, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


def _wait_for_rotation(engine: RunningEngine, check: Any = None, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with engine.client() as client:
        while True:
            if check is not None:
                check(client)
            status = client.get("/admin/v1/history/keys", headers=admin())
            assert status.status_code == 200, status.text
            if status.json()["pending"] == 0:
                return status.json()
            assert time.monotonic() < deadline, status.json()
            time.sleep(0.05)


# --- key rotation -----------------------------------------------------------------------------


def test_old_history_reads_through_a_key_rotation_and_ends_under_the_new_key(engine_factory: StartEngine) -> None:
    # 1. The old single-key form (key A) writes through the API.
    engine = _start(engine_factory, _security(single=True))
    with engine.client() as client:
        for i in range(3):
            reply = client.post("/api/v1/chat", json={"message": f"api turn {i}"}, headers=token("ann"))
            assert reply.status_code == 200, reply.text
        before = {m["id"]: m["content"] for m in _all_messages(client, token("ann"))}
    stop_engine(engine)
    # Plus records from before key ids: sealed with A, and plaintext from before encryption was on.
    sealed, sealed_texts = _legacy_rows(1500, "ann", KEY_A)
    plain, plain_texts = _legacy_rows(20, "ann", None)
    _insert_sqlite(_db(engine), sealed + plain)
    expected = {**before, **sealed_texts, **plain_texts}

    # 2. Keyring [B, A]: everything reads while the background re-sealing runs, and after it.
    engine = _start(engine_factory, _security(["b", "a"]))

    def reads_everything(client: httpx.Client) -> None:
        assert {m["id"]: m["content"] for m in _all_messages(client, token("ann"))} == expected

    final = _wait_for_rotation(engine, reads_everything)
    assert final["current"] == "b" and final["records"] == {"b": len(expected)}
    db = sqlite3.connect(_db(engine))
    stored = db.execute("SELECT key_id, content FROM messages").fetchall()
    db.close()
    assert {key_id for key_id, _ in stored} == {"b"}
    assert all(Fernet(KEY_B.encode()).decrypt(content.encode()) for _, content in stored)
    stop_engine(engine)
    # No plaintext left in the files, free pages and WAL included.
    raw = b"".join(p.read_bytes() for p in _db(engine).parent.glob("history.sqlite3*"))
    assert not [text for text in plain_texts.values() if text.encode() in raw]

    # 3. Keyring [B] alone: key A is gone and nothing needs it any more.
    engine = _start(engine_factory, _security(["b"]))
    with engine.client() as client:
        reads_everything(client)


def test_a_new_single_key_without_the_old_one_reports_records_it_cannot_read(engine_factory: StartEngine) -> None:
    engine = _start(engine_factory, _security(["a"]))
    with engine.client() as client:
        assert client.post("/api/v1/chat", json={"message": "hello"}, headers=token("ann")).status_code == 200
    stop_engine(engine)
    engine = _start(engine_factory, _security(["b"]))
    status = _wait_for_rotation_attempt(engine)
    assert status["records"] == {"a": 2} and status["unknown_keys"] == ["a"]
    with engine.client() as client:
        contents = [m["content"] for m in _all_messages(client, token("ann"))]
    assert contents and all(c.startswith("[unreadable") for c in contents)


def _wait_for_rotation_attempt(engine: RunningEngine) -> dict[str, Any]:
    time.sleep(0.5)  # the start-up pass finds nothing it can re-seal
    with engine.client() as client:
        return client.get("/admin/v1/history/keys", headers=admin()).json()


# --- retention --------------------------------------------------------------------------------


def test_retention_deletes_what_is_older_at_start_up(engine_factory: StartEngine) -> None:
    engine = _start(engine_factory, _security(["a"], history_retention_days=1))
    with engine.client() as client:
        fresh = client.post("/api/v1/chat", json={"message": "keep me"}, headers=token("ann")).json()
    stop_engine(engine)
    old, _ = _legacy_rows(3, "ann", KEY_A)
    old = [(*r[:5], time.time() - 3 * DAY) for r in old]
    _insert_sqlite(_db(engine), old)
    db = sqlite3.connect(_db(engine))
    with db:
        db.execute(
            "INSERT INTO client_messages (user, client_id, conversation_id, message_id, claimed_at) "
            "VALUES ('ann', 'old-client-id', ?, ?, ?)",
            (old[0][1], old[0][0], time.time() - 3 * DAY),
        )
    db.close()

    engine = _start(engine_factory, _security(["a"], history_retention_days=1))
    deadline = time.monotonic() + 20
    while _count(engine, "SELECT count(*) FROM messages WHERE created_at < ?", time.time() - DAY):
        assert time.monotonic() < deadline, "the old rows were not deleted"
        time.sleep(0.1)
    assert _count(engine, "SELECT count(*) FROM conversations WHERE id = ?", old[0][1]) == 0
    assert _count(engine, "SELECT count(*) FROM client_messages WHERE client_id = 'old-client-id'") == 0
    with engine.client() as client:
        kept = _all_messages(client, token("ann"))
    assert [m["conversation_id"] for m in kept] == [fresh["conversation_id"]] * 2


def _count(engine: RunningEngine, query: str, *args: Any) -> int:
    db = sqlite3.connect(_db(engine), timeout=10)
    try:
        return db.execute(query, args).fetchone()[0]
    finally:
        db.close()


# --- conversations and users ------------------------------------------------------------------


def test_a_user_lists_and_deletes_only_their_own_conversations(engine_factory: StartEngine) -> None:
    engine = _start(engine_factory, _security(["a"]))
    ann = token("ann")
    first_words = "a question " + "long " * 30
    with engine.client() as client:
        ids = [
            client.post("/api/v1/chat", json={"message": f"{i} {first_words}"}, headers=ann).json()["conversation_id"]
            for i in range(3)
        ]
        client.post("/api/v1/chat", json={"message": "again", "conversation_id": ids[0]}, headers=ann)
        first = client.get("/api/v1/conversations", params={"limit": 2}, headers=ann).json()
        second = client.get("/api/v1/conversations", params={"limit": 2, "before": first["next_before"]}, headers=ann)
        listed = first["conversations"] + second.json()["conversations"]
        assert second.json()["next_before"] is None
        assert [c["id"] for c in listed] == ids[::-1]  # newest first
        assert {c["id"]: c["messages"] for c in listed} == {ids[0]: 4, ids[1]: 2, ids[2]: 2}
        assert listed[-1]["title"] == f"0 {first_words}"[:80]
        assert all(c["created_at"] <= c["updated_at"] for c in listed)
        assert client.get("/api/v1/conversations", headers=token("bob")).json()["conversations"] == []

        assert client.delete(f"/api/v1/conversations/{ids[0]}", headers=token("bob")).status_code == 404
        assert client.delete("/api/v1/conversations/no-such-id", headers=ann).status_code == 404
        assert client.delete(f"/api/v1/conversations/{ids[0]}", headers=ann).status_code == 200
        left = client.get("/api/v1/conversations", headers=ann).json()["conversations"]
        gone = client.get("/api/v1/history", params={"conversation_id": ids[0]}, headers=ann).json()["messages"]
    assert [c["id"] for c in left] == ids[:0:-1] and gone == []


def test_a_deleted_users_text_is_gone_from_the_database_files(engine_factory: StartEngine) -> None:
    engine = _start(engine_factory, SecuritySettings(jwt_secret="jwt"))  # encryption off: the text is plain
    marker, other = f"marker-{uuid.uuid4().hex}", f"keep-{uuid.uuid4().hex}"
    with engine.client() as client:
        for i in range(50):  # enough to spill over several pages
            client.post("/api/v1/chat", json={"message": f"{marker} {i}"}, headers=token("ann"))
        client.post("/api/v1/chat", json={"message": other}, headers=token("bob"))
        assert client.delete("/api/v1/users/ann/history", headers=token("bob")).status_code == 403
        deleted = client.delete("/api/v1/users/ann/history", headers=token("ann"))
        assert deleted.status_code == 200 and deleted.json()["deleted_messages"] == 100
        assert _all_messages(client, token("ann")) == []
        assert len(_all_messages(client, token("bob"))) == 2
    files = sorted(_db(engine).parent.glob("history.sqlite3*"))
    assert any(p.name.endswith("-wal") for p in files)  # still running: the WAL is there, and read too
    raw = b"".join(p.read_bytes() for p in files)
    assert marker.encode() not in raw
    stop_engine(engine)
    assert other.encode() in _db(engine).read_bytes()  # the check can see plaintext: bob's is still there


def test_an_admin_reads_and_deletes_a_channel_users_history(engine_factory: StartEngine) -> None:
    engine = _start(engine_factory, SecuritySettings(jwt_secret="jwt"))
    with engine.client() as client:  # the schema exists once the engine runs
        assert client.get("/api/v1/conversations", headers=token("ann")).status_code == 200
    rows, texts = _legacy_rows(3, "telegram:123", None)
    _insert_sqlite(_db(engine), rows)
    with engine.client() as client:
        denied = client.get("/api/v1/history", params={"user": "telegram:123"}, headers=token("ann"))
        read = client.get("/api/v1/history", params={"user": "telegram:123"}, headers=admin())
        own = client.get("/api/v1/history", params={"user": "ann"}, headers=token("ann"))
        assert (denied.status_code, read.status_code, own.status_code) == (403, 200, 200)
        assert read.json()["user"] == "telegram:123"
        assert {m["id"]: m["content"] for m in read.json()["messages"]} == texts
        assert client.delete("/api/v1/users/telegram:123/history", headers=admin()).json()["deleted_messages"] == 3
        assert client.get("/api/v1/history", params={"user": "telegram:123"}, headers=admin()).json()["messages"] == []


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def pg_dsn(postgres: Service) -> Iterator[str]:  # noqa: F811 - the fixture imported above
    """A database of its own for each test, on the shared throwaway cluster."""
    name = f"lifecycle_{uuid.uuid4().hex[:12]}"
    asyncio.run(_fetch(postgres.url, f"CREATE DATABASE {name}"))
    yield postgres.url.rsplit("/", 1)[0] + f"/{name}"


def _start_pg(factory: StartEngine, dsn: str, security: SecuritySettings) -> RunningEngine:
    return factory(
        [model("local")],
        secrets={**SECRETS, "pg": dsn},
        security=security,
        history_backend="postgres",
        history_dsn_secret="pg",
    )


async def _pg(dsn: str, query: str, *args: Any, many: list[tuple] | None = None) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        if many is not None:
            await conn.executemany(query, many)
            return []
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def _insert_pg(dsn: str, rows: list[tuple]) -> None:
    for conversation, user in {(r[1], r[2]) for r in rows}:
        created = min(r[5] for r in rows)
        asyncio.run(_pg(dsn, "INSERT INTO conversations VALUES ($1, $2, $3, $3)", conversation, user, created))
    query = (
        "INSERT INTO messages (id, conversation_id, user_name, role, content, created_at) VALUES ($1,$2,$3,$4,$5,$6)"
    )
    asyncio.run(_pg(dsn, query, many=rows))


@pytest.mark.slow
def test_postgres_rotates_keys_keeps_retention_and_deletes_users(engine_factory: StartEngine, pg_dsn: str) -> None:
    engine = _start_pg(engine_factory, pg_dsn, _security(["a"]))
    with engine.client() as client:
        for user in ("ann", "bob"):
            assert (
                client.post("/api/v1/chat", json={"message": f"hi from {user}"}, headers=token(user)).status_code == 200
            )
        before = {m["id"]: m["content"] for m in _all_messages(client, token("ann"))}
    stop_engine(engine)
    sealed, sealed_texts = _legacy_rows(800, "ann", KEY_A)
    old, _ = _legacy_rows(4, "ann", KEY_A)
    old = [(*r[:5], time.time() - 3 * DAY) for r in old]
    _insert_pg(pg_dsn, sealed)
    _insert_pg(pg_dsn, old)
    expected = {**before, **sealed_texts}

    engine = _start_pg(engine_factory, pg_dsn, _security(["b", "a"], history_retention_days=1))

    def reads_everything(client: httpx.Client) -> None:
        assert {m["id"]: m["content"] for m in _all_messages(client, token("ann"))} == expected

    final = _wait_for_rotation(engine, reads_everything)
    assert final["records"] == {"b": len(expected) + 2}  # ann's and bob's; the old ones are gone
    keys = asyncio.run(_pg(pg_dsn, "SELECT DISTINCT key_id FROM messages"))
    assert [r["key_id"] for r in keys] == ["b"]
    assert not asyncio.run(_pg(pg_dsn, "SELECT 1 FROM conversations WHERE id = $1", old[0][1]))
    stop_engine(engine)

    engine = _start_pg(engine_factory, pg_dsn, _security(["b"]))
    with engine.client() as client:
        reads_everything(client)
        listed = client.get("/api/v1/conversations", headers=token("ann")).json()["conversations"]
        assert sorted(c["messages"] for c in listed) == [2, 800]
        assert client.delete(f"/api/v1/conversations/{listed[0]['id']}", headers=token("bob")).status_code == 404
        assert client.delete(f"/api/v1/conversations/{listed[0]['id']}", headers=token("ann")).status_code == 200
        gone = client.delete("/api/v1/users/ann/history", headers=admin()).json()["deleted_messages"]
        assert gone == len(expected) - listed[0]["messages"]
        assert _all_messages(client, token("ann")) == []
        assert len(_all_messages(client, token("bob"))) == 2
    left = asyncio.run(_pg(pg_dsn, "SELECT count(*) AS n FROM messages WHERE user_name = 'ann'"))
    assert left[0]["n"] == 0


# --- the contract: spec -> settings -> engine, and the OpenAPI document ------------------------


def test_the_specs_keyring_and_retention_reach_the_engine() -> None:
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "assistant.yaml").read_text(encoding="utf-8"))
    data["security"] = {
        "history_retention_days": 30,
        "history_encryption": {
            "enabled": True,
            "keys": [{"id": "2026-12", "key": "${env:HK_NEW}"}, {"id": "2026-06", "key": "${env:HK_OLD}"}],
        },
    }
    spec = parse_spec(yaml.safe_dump(data, sort_keys=False))
    settings = build_settings(Target(spec=spec, host=spec.deploy.hosts[0], root="/srv/a", python=sys.executable))
    security = settings.security
    assert [(k.id, k.secret) for k in security.history_keys] == [
        ("2026-12", "security.history_encryption.keys.0.key"),
        ("2026-06", "security.history_encryption.keys.1.key"),
    ]
    assert security.history_retention_days == 30
    ring = keyring(security, {k.secret: value for k, value in zip(security.history_keys, (KEY_B, KEY_A), strict=True)})
    old = Keyring([("2026-06", KEY_A)]).seal("sealed last summer")
    assert ring.current == "2026-12" and ring.open(*old) == "sealed last summer"
    assert ring.seal("new")[1] == "2026-12"


def test_the_lifecycle_routes_answer_as_the_openapi_document_says(engine_factory: StartEngine) -> None:
    engine = _start(engine_factory, _security(["a"]))
    with engine.client() as client:
        document = client.get("/openapi.json", headers=admin()).json()
        conversation = client.post("/api/v1/chat", json={"message": "hi"}, headers=token("ann")).json()
        answers = {
            ("/api/v1/conversations", "get"): client.get("/api/v1/conversations", headers=token("ann")),
            ("/admin/v1/history/keys", "get"): client.get("/admin/v1/history/keys", headers=admin()),
            ("/api/v1/conversations/{conversation_id}", "delete"): client.delete(
                f"/api/v1/conversations/{conversation['conversation_id']}", headers=token("ann")
            ),
            ("/api/v1/users/{user}/history", "delete"): client.delete("/api/v1/users/ann/history", headers=admin()),
        }
    for (path, method), answer in answers.items():
        assert answer.status_code == 200, (path, answer.text)
        body = document["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        Draft202012Validator({**body, "components": document["components"]}).validate(answer.json())
