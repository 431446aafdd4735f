"""Run-time changes: the admin default-model switch under load, and SIGHUP re-reading settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from pathlib import Path

import httpx

from assistantctl.engine.http_protocol import DRAIN_SECONDS
from engine_process import TEST_JWT_KEY, TEST_JWT_SECRET, RunningEngine, StartEngine, as_user, model, written_lines
from fake_models import FakeUpstream


async def test_switching_the_default_under_load_drops_no_request(
    engine_factory: StartEngine, openai_fake: FakeUpstream
) -> None:
    openai_fake.reset()
    openai_fake.behaviour.chunk_delay = 0.01
    cloud = model("cloud", "openai", api_base=f"{openai_fake.url}/v1")
    engine = engine_factory([model("local"), cloud])
    sent = 0
    answers: list[tuple[float, int, str]] = []  # (started at, status, model)
    switched_at: list[float] = []

    enough = 50  # answers on each side of the switch, however fast this machine is right now
    async with httpx.AsyncClient(base_url=engine.url, timeout=20) as client:
        done = asyncio.Event()

        async def worker(w: int) -> None:
            nonlocal sent
            headers = as_user(f"u{w}")
            while not done.is_set():
                path = "/api/v1/chat/stream" if sent % 3 == 0 else "/api/v1/chat"
                sent += 1
                started = time.monotonic()
                response = await client.post(path, json={"message": f"load {sent}"}, headers=headers)
                if path.endswith("stream"):
                    name = json.loads(response.text.strip().rsplit("data: ", 1)[1])["model"]
                else:
                    name = response.json()["model"]
                answers.append((started, response.status_code, name))

        async def switch() -> None:
            while len(answers) < enough:
                await asyncio.sleep(0.01)
            response = await client.put("/admin/v1/default-model", json={"model": "cloud"})
            switched_at.append(time.monotonic())
            assert response.json() == {"default_model": "cloud", "previous": "local"}
            while sum(1 for started, *_ in answers if started > switched_at[0]) < enough:
                await asyncio.sleep(0.01)
            done.set()

        await asyncio.wait_for(asyncio.gather(switch(), *(worker(w) for w in range(20))), timeout=120)

    assert len(answers) == sent
    assert {status for _, status, _ in answers} == {200}
    assert {name for *_, name in answers} == {"local", "cloud"}
    assert {name for started, _, name in answers if started > switched_at[0]} == {"cloud"}


def test_admin_endpoint_is_audited_and_closed_to_remote_callers(engine_factory: StartEngine, tmp_path) -> None:
    audit = tmp_path / "audit.log"
    engine = engine_factory(
        [model("local"), model("other")],
        security={"audit_log": str(audit), "jwt_secret": TEST_JWT_SECRET},
        secrets={TEST_JWT_SECRET: TEST_JWT_KEY},
    )
    remote = {"X-Forwarded-For": "203.0.113.9"}
    with engine.client() as client:
        anonymous = client.put("/admin/v1/default-model", json={"model": "other"}, headers=remote)
        user = client.put("/admin/v1/default-model", json={"model": "other"}, headers={**remote, **as_user("ann")})
        unknown = client.put("/admin/v1/default-model", json={"model": "ghost"})
        missing = client.put("/admin/v1/default-model", json={})
        ok = client.put("/admin/v1/default-model", json={"model": "other"}, headers={"X-Request-ID": "adm-1"})
        models = client.get("/v1/models").json()["data"]
    assert (anonymous.status_code, user.status_code) == (401, 403)  # a remote caller needs a key with admin
    assert (unknown.status_code, missing.status_code, ok.status_code) == (404, 400, 200)
    assert [m["id"] for m in models if m["default"]] == ["other"]
    record = json.loads(written_lines(audit, '"set_default_model"', '"adm-1"')[-1])
    assert record["action"] == "set_default_model" and record["model"] == "other"
    assert record["previous"] == "local" and record["request_id"] == "adm-1"
    assert record["user"] == "local@127.0.0.1"


def test_sighup_rereads_the_settings_file(engine_factory: StartEngine) -> None:
    engine: RunningEngine = engine_factory([model("local")])
    settings = engine.settings()
    engine.write_settings(
        settings.model_copy(
            update={
                "models": [*settings.models, model("fresh")],
                "default_model": "fresh",
            }
        )
    )
    engine.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    with engine.client() as client:
        while time.monotonic() < deadline:
            names = [m["id"] for m in client.get("/v1/models").json()["data"]]
            if "fresh" in names:
                break
            time.sleep(0.05)
        assert names == ["local", "fresh"]
        assert client.post("/api/v1/chat", json={"message": "hi"}).json()["model"] == "fresh"
        # A broken file is refused and the running settings stay.
        engine.settings_path.write_text("{broken")
        engine.process.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert client.post("/api/v1/chat", json={"message": "hi"}).json()["model"] == "fresh"
    assert engine.process.poll() is None
    # the workers refuse it in their own log, written in the background: give the line a moment
    deadline = time.monotonic() + 10
    while not any("reload failed" in line for line in engine.log_lines()):
        assert time.monotonic() < deadline, "no 'reload failed' line in the engine's log"
        time.sleep(0.1)


def worker_pids(parent: int) -> set[int]:
    """uvicorn's live workers (not multiprocessing's resource tracker); a retired worker leaves once it exited."""
    workers = set()
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # it exited since the list was read
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(int(pid))
    return workers


def test_two_workers_share_metrics_and_restart_on_sighup(engine_factory: StartEngine) -> None:
    engine = engine_factory([model("local")], workers=2)
    with engine.client() as client:
        answered_by = set()
        for _ in range(40):
            answered_by.add(client.get("/health").json()["pid"])
            client.post("/api/v1/chat", json={"message": "hi"})
        pids = worker_pids(engine.process.pid)
        assert answered_by <= pids and len(pids) == 2
        assert engine.metric("assistant_model_calls_total", model="local", outcome="success") == 40
        settings = engine.settings()
        # A new log level needs new processes: the parent replaces the workers one by one.
        engine.write_settings(
            settings.model_copy(update={"models": [*settings.models, model("fresh")], "log_level": "warning"})
        )
        engine.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while (alive := worker_pids(engine.process.pid)) and alive & pids and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(alive) == 2 and not alive & pids, "old workers still running"
        assert all(len(client.get("/v1/models").json()["data"]) == 2 for _ in range(10))
        # counters of the retired workers stay in the aggregate
        assert engine.metric("assistant_model_calls_total", model="local", outcome="success") == 40


def _get_health(conn: socket.socket) -> tuple[int, bytes]:
    """One keep-alive GET /health on `conn`: the answering worker's pid and the response head."""
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: engine\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        data = conn.recv(65536)
        assert data, f"the connection was closed under its client after {received!r}"
        received += data
    head, _, body = received.partition(b"\r\n\r\n")
    return json.loads(body)["pid"], head.lower()


def test_a_retiring_worker_keeps_its_idle_connections_until_their_client_is_done(
    engine_factory: StartEngine,
) -> None:
    """Behind nginx, closing an idle keep-alive connection while nginx sends a request on it is a
    502 (nginx never retries a POST). So a worker retired by a roll stops accepting but answers what
    its kept connections still send, with `Connection: close`, and closes the idle rest only after
    nginx's upstream keepalive_timeout has passed (nginx closed them first)."""
    engine = engine_factory([model("local")], workers=2)
    port = int(engine.url.rsplit(":", 1)[1])
    conns, by_worker = [], {}
    while len(by_worker) < 2:  # one kept connection to each worker; the kernel picks who accepts
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        pid, _ = _get_health(conn)
        conns.append(conn)
        by_worker.setdefault(pid, conn)
    old = worker_pids(engine.process.pid)
    settings = engine.settings()
    engine.write_settings(settings.model_copy(update={"log_level": "warning"}))  # needs new processes
    engine.process.send_signal(signal.SIGHUP)
    asked_pid, asked = next(iter(by_worker.items()))
    deadline = time.monotonic() + 30
    while not any(f"worker {asked_pid} retiring" in line for line in engine.log_lines()):
        assert time.monotonic() < deadline, f"worker {asked_pid} was not retired"
    # The parent logs "retiring" as it signals; the worker may answer once more before its handler runs.
    pid, head = _get_health(asked)
    while b"connection: close" not in head and time.monotonic() < deadline:
        assert pid == asked_pid
        pid, head = _get_health(asked)
    assert pid == asked_pid and b"connection: close" in head
    assert asked.recv(1) == b""  # then it closes, as it said
    started = time.monotonic()
    for conn in conns:
        if conn is not asked:
            conn.settimeout(DRAIN_SECONDS + 10)
            assert conn.recv(1) == b""  # closed by the worker once the drain is over
    assert time.monotonic() - started >= 1, "idle connections were closed without a drain"
    deadline = time.monotonic() + 30
    while worker_pids(engine.process.pid) & old:
        assert time.monotonic() < deadline, "retired workers still running"
        time.sleep(0.2)
    for conn in conns:
        conn.close()
