"""A virtual IP moved by keepalived between two engine + edge hosts that share their history.

The pair, `ha-a` (master) and `ha-b`, each run the engine, nginx and keepalived under their own
supervisord; keepalived tracks `/health` through the host's nginx, so the address leaves a host
whose engine does not answer. History lives in a real PostgreSQL the module starts in the root
namespace on the bridge's address (`deploy.state.history: postgres`, the DSN a `${env:...}` secret),
so a conversation begun on one host is served by the other.

Two engine failures are measured, and only one of them is a failover:
- the engine stops and stays down (`supervisorctl stop engine`: what a crash loop that supervisor
  gives up on, or an engine that hangs, looks like from keepalived): the address moves to ha-b
  after the check fails twice (2 s apart), and comes back once ha-a's engine is healthy again;
- the engine crashes (SIGKILL to its process group) and supervisor restarts it: the restart
  (~1-3 s) is usually shorter than two failed checks, so the address often stays on ha-a and
  clients get 502s from its nginx until the engine is back; the test measures it and only asserts
  that the address serves again, without a requirement that it moved.

Rolling applies drain the pair (playbooks/tasks/drain.yml): the tests apply an engine change to
both hosts while a client calls the virtual IP, and check that a batch draining both is refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from postgres import start_postgres

from api_keys import bearer, wait_for_key
from fleet_deployment import FleetDeployment, only_prepared

pytestmark = pytest.mark.slow

ROLES = {"ha-a": ["engine", "edge"], "ha-b": ["engine", "edge"]}
SWITCH_LIMIT_SECONDS = 20
DSN_ENV = "ASSISTANT_FLEET_PG_DSN"


@pytest.fixture(scope="module")
def pair(make_fleet, tmp_path_factory) -> Iterator[FleetDeployment]:
    fleet = make_fleet(list(ROLES))
    db = start_postgres(fleet.gateway, f"{fleet.address(0)}/24")
    try:
        ha = {"virtual_ip": fleet.address(100), "interface": "eth0", "router_id": 77, "hosts": ["ha-a", "ha-b"]}
        state = {"history": "postgres", "postgres_dsn": f"${{env:{DSN_ENV}}}"}
        folder = tmp_path_factory.mktemp("ha-spec")
        deployment = FleetDeployment(fleet, folder, ROLES, env={DSN_ENV: db.dsn}, serial=2, ha=ha, state=state)
        first, seconds = deployment.timed("apply", "--auto-approve")
        print(f"\nfirst apply of the HA pair (2 SSH hosts, serial 2): {seconds:.1f} s")
        assert first.returncode == 0, first.stdout + first.stderr
        yield deployment
    finally:
        # The engines' pools are cut by the fast shutdown; the fleet itself is closed by make_fleet.
        db.stop()


# --- the virtual IP, seen from the controller ---------------------------------------------------


def vip(pair: FleetDeployment, path: str = "/health") -> str:
    return f"http://{pair.data['deploy']['ha']['virtual_ip']}:8080{path}"


def vip_holders(pair: FleetDeployment) -> list[str]:
    """The HA hosts that carry the virtual IP: one when settled, briefly two while one takes over."""
    address = pair.data["deploy"]["ha"]["virtual_ip"]
    return [
        name
        for name in ROLES
        if f" {address}/" in pair.host(name).run("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    ]


def answers(url: str, timeout: float = 0.5) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Watch:
    """One poll of the virtual IP every 0.1 s: how long until done, what failed, who held it."""

    seconds: float = 0.0
    failed: int = 0
    total: int = 0
    holders: list[str] = field(default_factory=list)  # every host seen holding the address
    outage: float = 0.0  # from the first failed request to the first success after failures

    def line(self) -> str:
        return f"{self.seconds:.1f} s, {self.failed} of {self.total} requests to the VIP failed"


def watch_until(pair: FleetDeployment, holder: str, limit: float = SWITCH_LIMIT_SECONDS) -> Watch:
    """Poll the VIP until `holder` alone has it and it answers; fail after `limit` seconds."""
    watch, start, first_failure = Watch(), time.monotonic(), None
    while time.monotonic() - start < limit:
        ok = answers(vip(pair))
        now = time.monotonic()
        watch.total += 1
        if not ok:
            watch.failed += 1
            first_failure = first_failure or now
        elif first_failure and not watch.outage:
            watch.outage = now - first_failure
        holders = vip_holders(pair)
        watch.holders += [h for h in holders if h not in watch.holders]
        if ok and holders == [holder]:
            watch.seconds = now - start
            return watch
        time.sleep(0.1)
    raise AssertionError(f"the virtual IP did not settle on {holder} within {limit} s (now on {vip_holders(pair)})")


def supervisorctl(pair: FleetDeployment, name: str, *args: str) -> str:
    python = pair.data["deploy"]["hosts"][0]["python"]
    return pair.host(name).supervisorctl(python, *args, check=False).stdout


def engine_pid(pair: FleetDeployment, name: str) -> int:
    return int(supervisorctl(pair, name, "pid", "engine").strip())


def engine_workers(parent: int) -> set[int]:
    """The engine's workers: its parent's spawned children (not multiprocessing's resource tracker);
    the test hosts share this machine's pid space."""
    found = set()
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(int(pid))
        except FileNotFoundError:  # it exited since the list was read
            pass
    return found


def key_for(pair: FleetDeployment, user: str) -> dict[str, str]:
    """Headers with a new API key for `user` (`assistantctl keys create`): the pair shares its keys in
    PostgreSQL, so one key opens both engines."""
    created = pair.run("keys", "create", user)
    assert created.returncode == 0, created.stdout + created.stderr
    key = bearer(created.stdout.strip())
    for host in ("ha-a", "ha-b"):
        wait_for_key(pair.url(host), key)
    return key


@pytest.fixture(scope="module")
def hana(pair: FleetDeployment) -> dict[str, str]:
    return key_for(pair, "hana")


def chat(message: str, caller: dict[str, str], conversation: str | None = None, url: str | None = None) -> dict:
    body = {"message": message, **({"conversation_id": conversation} if conversation else {})}
    reply = httpx.post(url, json=body, headers=caller, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def history(pair: FleetDeployment, caller: dict[str, str], conversation: str) -> list[str]:
    url = vip(pair, "/api/v1/history")
    page = httpx.get(url, params={"conversation_id": conversation}, headers=caller, timeout=10)
    assert page.status_code == 200, page.text
    return [m["content"] for m in page.json()["messages"]]


# --- failover ---------------------------------------------------------------------------------


def test_the_virtual_ip_moves_to_the_backup_and_back_when_the_master_engine_stops(pair, hana):
    settled = watch_until(pair, "ha-a")
    print(f"\nvirtual IP on the master ha-a {settled.seconds:.1f} s after the test began")
    assert "RUNNING" in supervisorctl(pair, "ha-b", "status", "keepalived")
    before = chat("remember the blue door", hana, url=vip(pair, "/api/v1/chat"))
    conversation = before["conversation_id"]

    stopped_at = time.monotonic()
    assert "stopped" in supervisorctl(pair, "ha-a", "stop", "engine")
    failover = watch_until(pair, "ha-b")
    print(f"failover to ha-b after the master's engine stopped: {failover.line()} meanwhile")
    steady = [answers(vip(pair)) for _ in range(20)]
    assert all(steady), f"requests to the VIP failed after the switch: {steady}"
    assert vip_holders(pair) == ["ha-b"]
    assert failover.seconds < SWITCH_LIMIT_SECONDS and time.monotonic() - stopped_at < SWITCH_LIMIT_SECONDS

    # ha-b's engine serves what ha-a's wrote (the master's engine is down: nothing else could).
    assert "remember the blue door" in history(pair, hana, conversation)
    after = chat("which door?", hana, conversation, url=vip(pair, "/api/v1/chat"))
    assert after["conversation_id"] == conversation and "(turn 2)" in after["reply"], after

    assert "started" in supervisorctl(pair, "ha-a", "start", "engine")
    failback = watch_until(pair, "ha-a")
    print(f"back to ha-a once its engine is healthy: {failback.line()} meanwhile")
    steady = [answers(vip(pair)) for _ in range(20)]
    assert all(steady), f"requests to the VIP failed after the master came back: {steady}"
    assert vip_holders(pair) == ["ha-a"]
    # And ha-a serves the turn written on ha-b.
    assert history(pair, hana, conversation).count("which door?") == 1
    notify_log = pair.host("ha-b").path("logs/keepalived-notify.log").read_text()
    assert "state=MASTER" in notify_log and "state=BACKUP" in notify_log, notify_log


def test_a_crashed_master_engine_is_restarted_by_supervisor_and_the_virtual_ip_serves_again(pair):
    watch_until(pair, "ha-a")
    crashed = engine_pid(pair, "ha-a")
    os.killpg(crashed, signal.SIGKILL)  # the uvicorn master and its workers, as an OOM kill would
    deadline = time.monotonic() + 5
    while crashed in pair.host("ha-a").pids() and time.monotonic() < deadline:  # until supervisor reaped it
        time.sleep(0.01)
    recovered = watch_until(pair, "ha-a")
    moved = "ha-b" in recovered.holders
    print(
        f"\nmaster's engine SIGKILLed, restarted by supervisor: served again after {recovered.outage:.1f} s of "
        f"failures, {recovered.failed} of {recovered.total} requests failed, "
        f"the VIP {'moved to ha-b and back' if moved else 'stayed on ha-a'}"
    )
    restarted = engine_pid(pair, "ha-a")
    status = supervisorctl(pair, "ha-a", "status", "engine").split()
    assert restarted != crashed and status[1] in ("STARTING", "RUNNING"), status  # STARTING: within startsecs
    assert all(answers(vip(pair)) for _ in range(20))


# --- rolling apply --------------------------------------------------------------------------------


@dataclass
class Load:
    """One client calling the VIP back to back (a new connection per call, 5 s timeout), as each of
    `users` in turn (so no user's rate limit is reached)."""

    url: str
    users: list[dict[str, str]]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            start = time.monotonic()
            try:
                user = self.users[i % len(self.users)]
                reply = httpx.post(self.url, json={"message": f"m{i}"}, headers=user, timeout=5)
                if reply.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{reply.status_code} {reply.text[:80]}")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__} {exc}")
            self.slowest = max(self.slowest, time.monotonic() - start)
            time.sleep(0.05)


def notify_states(pair: FleetDeployment, name: str) -> list[str]:
    lines = pair.host(name).path("logs/keepalived-notify.log").read_text().splitlines()
    return [line.split(" state=")[1].split()[0] for line in lines]


def engine_change(pair: FleetDeployment, serial: int) -> dict:
    """The spec with a new log level (engine/settings.json changes: the engines roll their workers)."""
    changed = pair.copy()
    level = changed["monitoring"]["logging"]["level"]
    changed["monitoring"]["logging"]["level"] = "warning" if level != "warning" else "info"
    changed["deploy"]["serial"] = serial
    return changed


def test_a_batch_that_would_drain_both_hosts_of_the_pair_is_refused_before_anything_changes(pair):
    watch_until(pair, "ha-a")
    live = {name: pair.live_release(name) for name in ROLES}
    releases = {name: pair.releases(name) for name in ROLES}
    pids = {name: engine_pid(pair, name) for name in ROLES}
    original = pair.data
    pair.rewrite(engine_change(pair, serial=2))
    try:
        result = pair.run("apply", "--auto-approve")
    finally:
        pair.rewrite(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "would both leave the pair at once" in result.stdout, result.stdout
    assert {name: pair.live_release(name) for name in ROLES} == live
    assert {name: pair.releases(name) for name in ROLES} == releases
    assert {name: engine_pid(pair, name) for name in ROLES} == pids
    for name in ROLES:
        assert "RUNNING" in supervisorctl(pair, name, "status", "keepalived")
    assert vip_holders(pair) == ["ha-a"]


def test_a_host_whose_apply_fails_after_draining_rolls_back_and_rejoins_the_pair(pair):
    """A DSN that passes every validator but names no server: ha-a's new engine never gets healthy."""
    watch_until(pair, "ha-a")
    live = {name: pair.live_release(name) for name in ROLES}
    original, good = pair.data, pair.env[DSN_ENV]
    one_at_a_time = pair.copy()
    one_at_a_time["deploy"]["serial"] = 1
    one_at_a_time["deploy"]["health_check_seconds"] = 15  # it will fail: no need to wait the default 40 s
    pair.rewrite(one_at_a_time)
    pair.env[DSN_ENV] = good.rsplit(":", 1)[0] + ":1/postgres"  # only the secret changes: engine restart
    try:
        result = pair.run("apply", "--auto-approve")
    finally:
        pair.env[DSN_ENV] = good
        pair.rewrite(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[ha-a] changed   Stop keepalived here" in result.stdout
    # A new worker exits at start (no server at that DSN): the engine keeps its old workers, which
    # never answer with the new settings' sha256, so the health check fails; it never goes live.
    failed_at = "[ha-a] FAILED    Report the failure: apply failed at 'Wait for the engine to answer /health with the"
    assert failed_at in result.stdout, result.stdout
    assert "[ha-a] changed   Start keepalived here" in result.stdout
    assert only_prepared("ha-b", result.stdout), result.stdout  # the rollout stopped at the failing host
    assert {name: pair.live_release(name) for name in ROLES} == live
    assert "RUNNING" in supervisorctl(pair, "ha-a", "status", "keepalived")
    back = watch_until(pair, "ha-a")
    print(f"\nfailed apply on ha-a rolled back; the VIP back on ha-a: {back.line()} while settling")
    assert pair.run("plan", "--detailed-exitcode").returncode == 0


# What the one-line reason of a failed apply names, per step the fault is put at.
FAULT_STEPS = {"switch": "Point current at", "reload": "Reload changed services", "health": "/health"}


@pytest.mark.parametrize("step", list(FAULT_STEPS))
def test_a_fault_at_any_step_leaves_the_host_on_its_release_and_back_in_the_pair(pair, step):
    """The HA pair's row of the failure matrix (tests/test_failure_matrix.py): a switch that fails
    for real (a directory where the next link goes), a reload or health check that fails through
    ASSISTANTCTL_TEST_FAULT after the new files went live. ha-a drained first; it must come back on
    its previous release, rejoin the pair and take the virtual IP back, and the change stays pending."""
    watch_until(pair, "ha-a")
    live = {name: pair.live_release(name) for name in ROLES}
    original, env = pair.data, pair.env
    next_link = pair.host("ha-a").path("current.next")
    pair.rewrite(engine_change(pair, serial=1))
    if step == "switch":
        next_link.mkdir()
    else:
        pair.env = {**env, "ASSISTANTCTL_TEST_FAULT": step}
    try:
        result = pair.run("apply", "--auto-approve")
        pair.env = env
        assert result.returncode == 1, result.stdout + result.stderr
        reasons = [line for line in result.stdout.splitlines() if "apply failed at '" in line]
        assert reasons and all(FAULT_STEPS[step] in line for line in reasons), result.stdout
        assert "[ha-a] changed   Stop keepalived here" in result.stdout
        assert only_prepared("ha-b", result.stdout), result.stdout
        assert {name: pair.live_release(name) for name in ROLES} == live
        assert "RUNNING" in supervisorctl(pair, "ha-a", "status", "keepalived")
        watch_until(pair, "ha-a")
        assert pair.run("plan", "--detailed-exitcode").returncode == 2, "the change must stay pending"
    finally:
        pair.env = env
        pair.rewrite(original)
        if next_link.is_dir() and not next_link.is_symlink():
            shutil.rmtree(next_link)
    assert pair.run("plan", "--detailed-exitcode").returncode == 0


def test_a_rolling_apply_drains_each_host_of_the_pair_and_the_virtual_ip_keeps_serving(pair):
    """Each host hands the VIP over before its engine rolls its workers and takes its place back after.

    The client sends one request at a time, so a VIP move can catch at most one request in
    flight (its connection is reset: the new holder has no such socket); a request sent while
    nobody holds the address (~0.6 s, the peer's VRRP skew) is answered after a SYN retransmit,
    within the client's 5 s. The rollout moves the VIP twice: ha-a -> ha-b when ha-a drains, back
    to ha-a when ha-a rejoins (it preempts, or ha-b's drain hands it over). So at most 2 failed
    requests, whatever the timing. Without the drain, an engine restart behind the VIP answers
    502 for the ~2 s it takes to come up: ~20 failures at this client's pace.
    """
    watch_until(pair, "ha-a")
    pids = {name: engine_pid(pair, name) for name in ROLES}
    workers = {name: engine_workers(pids[name]) for name in ROLES}
    notified = {name: len(notify_states(pair, name)) for name in ROLES}
    # Up to ~15 calls a second for the whole rollout: more than one user's 600 a minute.
    load = Load(vip(pair, "/api/v1/chat"), [key_for(pair, f"load-{n}") for n in range(4)])
    pair.rewrite(engine_change(pair, serial=1))
    client = threading.Thread(target=load.run, daemon=True)
    client.start()
    try:
        result, seconds = pair.timed("apply", "--auto-approve")
        time.sleep(2)  # and the VIP settles back on the master after its rejoin
    finally:
        load.stop.set()
        client.join(10)
    print(
        f"\nrolling apply (engine workers rolled on both HA hosts, serial 1): {seconds:.1f} s; "
        f"{len(load.failures)} of {load.ok + len(load.failures)} requests to the VIP failed, "
        f"slowest {load.slowest:.2f} s; failures: {load.failures}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Apply complete: 2 of 2 host(s) changed." in result.stdout
    moves = sum(notify_states(pair, name)[notified[name] :].count("MASTER") for name in ROLES)
    print(f"VIP moves during the rollout (MASTER transitions): {moves}")
    for name in ROLES:
        assert f"[{name}] changed   Stop keepalived here" in result.stdout, result.stdout
        assert f"[{name}] changed   Start keepalived here" in result.stdout, result.stdout
        # the engine rolled its workers (a new log level is built at a worker's start): same parent
        assert engine_pid(pair, name) == pids[name]
        assert engine_workers(pids[name]) and not engine_workers(pids[name]) & workers[name]
        assert "RUNNING" in supervisorctl(pair, name, "status", "keepalived")
        states = notify_states(pair, name)[notified[name] :]
        assert "STOP" in states and states[-1] in ("MASTER", "BACKUP"), states
    assert load.ok > 50, f"the client made only {load.ok} successful calls during the rollout"
    assert len(load.failures) <= 2, load.failures
    watch_until(pair, "ha-a")
