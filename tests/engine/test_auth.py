"""Who may call the engine: the one anonymous user on loopback, API keys, JWTs, the edge guard."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from api_keys import bearer, create_key, wait_for_key
from assistantctl.engine.settings import ChannelSettings, SecuritySettings
from engine_process import TEST_JWT_KEY, TEST_JWT_SECRET, RunningEngine, StartEngine, as_user, model

REMOTE = {"X-Forwarded-For": "203.0.113.9"}  # as the local nginx passes a client from elsewhere
CHAT = {"message": "hello"}


def keys_cli(engine: RunningEngine, *arguments: str) -> dict:
    command = [sys.executable, "-m", "assistantctl.engine.keys_cli", "--settings", str(engine.settings_path)]
    result = subprocess.run([*command, *arguments], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> RunningEngine:
    from engine_process import start_engine, stop_engine

    channels = [ChannelSettings(name="websocket", path="/ws", heartbeat_seconds=30)]
    running = start_engine(tmp_path_factory.mktemp("auth"), [model("local")], workers=2, channels=channels)
    yield running
    stop_engine(running)


def test_anonymous_callers_on_loopback_are_one_user_who_cannot_claim_another(engine: RunningEngine) -> None:
    with engine.client() as client:
        answer = client.post("/api/v1/chat", json=CHAT)
        claimed = client.post("/api/v1/chat", json={**CHAT, "user": "alice"})
        peek = client.get("/api/v1/history", params={"user": "alice"})
        own = client.get("/api/v1/history", params={"conversation_id": answer.json()["conversation_id"]})
    assert answer.status_code == 200
    assert claimed.status_code == 403 and "one user" in claimed.json()["error"]["message"]
    assert peek.json()["user"] == "alice"  # the host's own operator holds admin, and may read anyone's
    assert own.json()["user"] == "anonymous" and len(own.json()["messages"]) == 2


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "app.localhost", "LOCALHOST."])
def test_anonymous_loopback_callers_address_the_engine_by_a_loopback_name(engine: RunningEngine, host: str) -> None:
    port = engine.url.rsplit(":", 1)[1]
    with engine.client(headers={"Host": f"{host}:{port}"}) as client:
        assert client.get("/api/v1/history").status_code == 200


def test_a_page_whose_name_was_rebound_to_loopback_is_no_anonymous_caller(engine: RunningEngine) -> None:
    # DNS rebinding: a hostile site's name made to resolve to 127.0.0.1 sends its own name as Host
    # (and as Origin, which then looks same-site): without a key it must get nothing.
    port = engine.url.rsplit(":", 1)[1]
    rebound = {"Host": f"evil.example:{port}"}
    with engine.client(headers=rebound) as client:
        refused = [client.get("/api/v1/history"), client.post("/api/v1/chat", json=CHAT), client.get("/v1/models")]
    assert [r.status_code for r in refused] == [401] * 3, [r.text for r in refused]
    assert "localhost" in refused[0].json()["error"]["message"]
    ws_url = engine.url.replace("http", "ws") + "/ws"
    with pytest.raises(InvalidStatus) as caught:
        connect(ws_url, additional_headers={**rebound, "Origin": f"http://evil.example:{port}"}, open_timeout=5)
    assert caught.value.response.status_code in (401, 403)  # no anonymous caller, or no such origin
    key = bearer(create_key(engine.settings_path, "rebinder"))
    wait_for_key(engine.url, {**REMOTE, **key})
    with engine.client(headers={**rebound, **key}) as client:
        assert client.get("/api/v1/history").status_code == 200  # a key holder may use any name


def test_clients_from_elsewhere_get_nothing_without_a_key(engine: RunningEngine) -> None:
    with engine.client(headers=REMOTE) as client:
        refused = [
            client.post("/api/v1/chat", json=CHAT),
            client.post("/api/v1/chat/stream", json=CHAT),
            client.get("/api/v1/history"),
            client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
            client.get("/v1/models"),
            client.get("/openapi.json"),
            client.put("/admin/v1/default-model", json={"model": "local"}),
        ]
        metrics = client.get("/metrics")
        health = client.get("/health")
        ready = client.get("/ready")
    assert [r.status_code for r in refused] == [401] * len(refused), [r.text for r in refused]
    assert all(r.headers["www-authenticate"] == "Bearer" for r in refused)
    assert metrics.status_code == 403  # only the monitoring networks (loopback here) and admins
    assert health.status_code == 200  # probes need no key, and learn nothing of the insides
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_a_key_works_on_every_route_the_websocket_and_the_openai_sdk(engine: RunningEngine) -> None:
    import openai

    key = create_key(engine.settings_path, "telegram:4242")
    wait_for_key(engine.url, {**REMOTE, **bearer(key)})
    with engine.client(headers={**REMOTE, **bearer(key)}) as client:
        answer = client.post("/api/v1/chat", json=CHAT).json()
        history = client.get("/api/v1/history").json()
        streamed = client.post("/api/v1/chat/stream", json=CHAT)
    assert history["user"] == "telegram:4242" and history["messages"][0]["conversation_id"] == answer["conversation_id"]
    assert streamed.status_code == 200 and '"done":true' in streamed.text.replace(" ", "")
    sdk = openai.OpenAI(base_url=f"{engine.url}/v1", api_key=key, default_headers=REMOTE, max_retries=0)
    completion = sdk.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content
    forged = openai.OpenAI(
        base_url=f"{engine.url}/v1", api_key="sk-ast-000000000000-" + "x" * 43, default_headers=REMOTE, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        forged.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
    ws_url = engine.url.replace("http", "ws") + "/ws"
    with connect(ws_url, additional_headers={**REMOTE, **bearer(key)}, proxy=None, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "chat", "id": "c1", "message": "over the socket"}))
        frames = [json.loads(ws.recv(timeout=5))]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=5)))
    assert frames[-1]["type"] == "done" and "over the socket" in frames[-1]["reply"], frames
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, additional_headers=REMOTE, proxy=None, open_timeout=5)
    assert refused.value.response.status_code == 401


def test_scopes_limit_what_a_key_may_do(engine: RunningEngine) -> None:
    chat_only = create_key(engine.settings_path, "carol", ("chat",))
    admin = create_key(engine.settings_path, "root", ("admin",))
    for key in (chat_only, admin):
        wait_for_key(engine.url, {**REMOTE, **bearer(key)})
    with engine.client(headers=REMOTE) as client:
        assert client.post("/api/v1/chat", json=CHAT, headers=bearer(chat_only)).status_code == 200
        assert client.get("/api/v1/history", headers=bearer(chat_only)).status_code == 403
        assert client.get("/metrics", headers=bearer(chat_only)).status_code == 403
        switch = {"model": "local"}
        assert client.put("/admin/v1/default-model", json=switch, headers=bearer(chat_only)).status_code == 403
        assert client.get("/metrics", headers=bearer(admin)).status_code == 200
        switched = client.put("/admin/v1/default-model", json={"model": "local"}, headers=bearer(admin))
    assert switched.status_code == 200


def test_a_revoked_key_is_refused_by_every_worker(engine: RunningEngine) -> None:
    created = keys_cli(engine, "create", "--user", "dave", "--scopes", "chat")
    key, key_id = created["key"], created["record"]["id"]
    wait_for_key(engine.url, {**REMOTE, **bearer(key)})
    with engine.client(headers={**REMOTE, **bearer(key)}) as client:
        before = {client.post("/api/v1/chat", json=CHAT).status_code for _ in range(20)}
        assert keys_cli(engine, "revoke", key_id) == {"revoked": True, "id": key_id}
        wait_for_key(engine.url, {**REMOTE, **bearer(key)}, known=False)
        after = []
        for _ in range(40):  # fresh connections, so both workers answer some of them
            with httpx.Client(base_url=engine.url, headers={**REMOTE, **bearer(key)}) as fresh:
                after.append(fresh.post("/api/v1/chat", json=CHAT).status_code)
    assert before == {200}
    assert set(after) == {401}
    listed = {k["id"]: k for k in keys_cli(engine, "list")["keys"]}
    assert listed[key_id]["revoked_at"] is not None and "digest" not in listed[key_id]


def test_an_expired_key_is_refused(engine: RunningEngine) -> None:
    # Wide margins: making the key is a subprocess, and the workers learn new keys within a second.
    expires_at = time.time() + 5
    key = create_key(engine.settings_path, "erin", expires_at=expires_at)
    with engine.client(headers={**REMOTE, **bearer(key)}) as client:
        answers = []
        while time.time() < expires_at - 1 and 200 not in answers:
            answers.append(client.post("/api/v1/chat", json=CHAT).status_code)
            time.sleep(0.1)
        assert answers[-1] == 200, answers  # usable before it expires
        time.sleep(expires_at - time.time() + 0.3)
        assert client.post("/api/v1/chat", json=CHAT).status_code == 401


def test_keys_are_stored_hashed(engine: RunningEngine) -> None:
    key = create_key(engine.settings_path, "frank")
    secret = key.removeprefix("sk-ast-").split("-", 1)[1]  # the secret itself may hold a "-"
    database = Path(engine.settings().data_dir) / "keys.sqlite3"
    raw = b"".join(p.read_bytes() for p in database.parent.glob("keys.sqlite3*"))
    assert key.encode() not in raw and secret.encode() not in raw
    query = "SELECT user_name, digest FROM api_keys WHERE user_name = 'frank'"
    rows = sqlite3.connect(database).execute(query).fetchall()
    assert len(rows) == 1 and len(rows[0][1]) == 64
    assert oct(database.stat().st_mode & 0o777) == "0o600"


def hs256(claims: dict) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, TEST_JWT_KEY, algorithm="HS256")}


def test_a_jwt_needs_exp_and_a_bounded_lifetime(engine: RunningEngine) -> None:
    now = int(time.time())
    with engine.client(headers=REMOTE) as client:
        no_exp = client.post("/api/v1/chat", json=CHAT, headers=hs256({"sub": "gina"}))
        forever = client.post("/api/v1/chat", json=CHAT, headers=hs256({"sub": "gina", "exp": now + 10 * 86_400}))
        skewed = client.post("/api/v1/chat", json=CHAT, headers=hs256({"sub": "gina", "exp": now - 5}))
        stale = client.post("/api/v1/chat", json=CHAT, headers=hs256({"sub": "gina", "exp": now - 120}))
        scoped = client.get("/api/v1/history", headers=hs256({"sub": "gina", "exp": now + 60, "scope": "chat"}))
        fine = client.post("/api/v1/chat", json=CHAT, headers=as_user("gina"))
    assert no_exp.status_code == 401 and "exp" in no_exp.json()["error"]["message"]
    assert forever.status_code == 401 and "longer" in forever.json()["error"]["message"]
    assert skewed.status_code == 200  # within the default 30 s leeway
    assert stale.status_code == 401
    assert scoped.status_code == 403
    assert fine.status_code == 200


def _pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_rs256_from_a_public_key_and_es256_from_a_jwks(engine_factory: StartEngine) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs = engine_factory(
        [model("local")],
        name="rs256",
        security=SecuritySettings(jwt_public_key_secret="jwt.pub", jwt_algorithm="RS256", jwt_issuer="idp"),
        secrets={"jwt.pub": _pem(rsa_key)},
    )
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    es = engine_factory(
        [model("local")],
        name="es256",
        security=SecuritySettings(jwt_jwks_secret="jwks", jwt_algorithm="ES256"),
        secrets={"jwks": json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]})},
    )
    exp = int(time.time()) + 60
    good_rs = jwt.encode({"sub": "hal", "exp": exp, "iss": "idp"}, rsa_key, algorithm="RS256")
    other_rs = jwt.encode({"sub": "hal", "exp": exp, "iss": "idp"}, rsa.generate_private_key(65537, 2048), "RS256")
    good_es = jwt.encode({"sub": "ivy", "exp": exp}, ec_key, algorithm="ES256", headers={"kid": "k1"})
    unknown_kid = jwt.encode({"sub": "ivy", "exp": exp}, ec_key, algorithm="ES256", headers={"kid": "k9"})
    hs = jwt.encode({"sub": "hal", "exp": exp, "iss": "idp"}, "a" * 32, algorithm="HS256")

    def status(e: RunningEngine, token: str) -> int:
        headers = {**REMOTE, "Authorization": f"Bearer {token}"}
        return httpx.post(f"{e.url}/api/v1/chat", json=CHAT, headers=headers, timeout=10).status_code

    assert [status(rs, t) for t in (good_rs, other_rs, hs)] == [200, 401, 401]
    assert [status(es, t) for t in (good_es, unknown_kid)] == [200, 401]


@pytest.mark.parametrize("mode, loopback, remote", [("anywhere", 200, 200), ("off", 401, 401)])
def test_the_anonymous_switch(engine_factory: StartEngine, mode: str, loopback: int, remote: int) -> None:
    e = engine_factory(
        [model("local")],
        security=SecuritySettings(anonymous=mode, jwt_secret=TEST_JWT_SECRET),
        secrets={TEST_JWT_SECRET: TEST_JWT_KEY},
    )
    with e.client() as client:
        assert client.post("/api/v1/chat", json=CHAT).status_code == loopback
        assert client.post("/api/v1/chat", json=CHAT, headers=REMOTE).status_code == remote
        if mode == "anywhere":  # anonymous callers from elsewhere never hold admin
            assert client.put("/admin/v1/default-model", json={"model": "local"}, headers=REMOTE).status_code == 403
        assert client.post("/api/v1/chat", json=CHAT, headers={**REMOTE, **as_user("jo")}).status_code == 200
