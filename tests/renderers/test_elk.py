"""renderers/elk.py against real log lines: the engine (`python -m assistantctl.engine`, started from
its rendered settings) behind a real nginx (rendered config, high loopback ports) writes the logs;
the grok patterns taken from the rendered pipeline (parsed with `lscl`, a Logstash config parser,
with Logstash's default `support_escapes: false`) are run on them with `pygrok`. Filebeat and
Logstash themselves are not installable here, so Filebeat's inputs are checked structurally."""

from __future__ import annotations

import http.server
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from lscl.lang import LsclAttribute, LsclBlock, LsclConditions
from lscl.parser import parse_lscl
from pygrok import Grok

from api_keys import bearer, create_key, wait_for_key
from assistantctl.bundle import build_bundle
from assistantctl.engine.logs import TextFormatter
from assistantctl.engine.security.pii import Masker
from assistantctl.renderers import engine as engine_renderer
from assistantctl.renderers import nginx as nginx_renderer
from assistantctl.renderers.elk import CA_SECRET as CA
from assistantctl.renderers.elk import CERTIFICATE_SECRET as CERT
from assistantctl.renderers.elk import ENGINE_GROK, NGINX_GROK, PIPELINE_FILE, render, secret_files
from assistantctl.renderers.elk import KEY_SECRET as KEY
from assistantctl.renderers.escape import UnsafeValue
from assistantctl.schema.loader import SpecError
from processes import stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def elk_overrides(**deploy: object) -> dict:
    return {"monitoring": {"logging": {"elk": {"enabled": True, "index_prefix": "chat"}}}, "deploy": deploy}


# --- the pipeline as Logstash reads it -------------------------------------------------------------


def blocks(content: list, name: str) -> list[LsclBlock]:
    """Every block called `name` at any depth, conditional branches included."""
    found = []
    for item in content:
        if isinstance(item, LsclBlock):
            found += [item] if item.name == name else []
            found += blocks(item.content, name)
        elif isinstance(item, LsclConditions):
            for _, branch in item.conditions:
                found += blocks(branch, name)
            found += blocks(item.default or [], name)
    return found


def attrs(block: LsclBlock) -> dict:
    return {a.name: a.content for a in block.content if isinstance(a, LsclAttribute)}


def parsed_pipeline(target) -> list:
    return parse_lscl(render(target)[PIPELINE_FILE], support_escapes=False)


def grok_patterns(tree: list) -> dict[str, Grok]:
    """The grok of each `[fields][type]` branch, keyed by the type it tests for."""
    (conditions,) = [c for c in blocks(tree, "filter")[0].content if isinstance(c, LsclConditions)][:1]
    patterns = {}
    for condition, branch in conditions.conditions:
        assert condition.first.names == ["fields", "type"]
        (grok,) = blocks(branch, "grok")
        patterns[condition.second] = attrs(grok)["match"]["message"]
    return patterns


def test_pipeline_parses_and_carries_the_grok_patterns_verbatim(make_target):
    tree = parsed_pipeline(make_target(elk_overrides()))
    assert grok_patterns(tree) == {"engine": ENGINE_GROK, "nginx": NGINX_GROK}
    assert attrs(blocks(tree, "beats")[0]) == {"host": "127.0.0.1", "port": 5044}
    output = attrs(blocks(tree, "elasticsearch")[0])
    assert output["hosts"] == ["http://127.0.0.1:9200"]
    assert output["index"] == "chat-%{[fields][type]}-%{+YYYY.MM.dd}"
    convert = attrs(blocks(tree, "mutate")[-1])["convert"]
    assert convert == {"latency_ms": "float", "request_time": "float", "status": "integer", "bytes": "integer"}


def test_json_engine_logs_are_decoded_not_grokked(make_target):
    tree = parsed_pipeline(make_target(merge_json_format()))
    assert [attrs(b)["source"] for b in blocks(tree, "json")] == ["message"]
    assert len(blocks(tree, "grok")) == 1


def merge_json_format() -> dict:
    overrides = elk_overrides()
    overrides["monitoring"]["logging"]["format"] = "json"
    return overrides


@pytest.mark.parametrize("url", ['http://es.example:9200/a"b', "http://es.example:9200/a'b"])
def test_quotes_in_a_value_cannot_break_out_of_a_logstash_string(url, make_target):
    target = make_target(elk_overrides())
    elk = target.spec.monitoring.logging.elk.model_copy(update={"elasticsearch_hosts": [url]})
    logging_ = target.spec.monitoring.logging.model_copy(update={"elk": elk})
    spec = target.spec.model_copy(
        update={"monitoring": target.spec.monitoring.model_copy(update={"logging": logging_})}
    )
    tree = parsed_pipeline(replace(target, spec=spec))
    assert attrs(blocks(tree, "elasticsearch")[0])["hosts"] == [url]
    both = target.spec.monitoring.logging.elk.model_copy(update={"elasticsearch_hosts": ["http://x/a'\""]})
    spec = spec.model_copy(
        update={
            "monitoring": spec.monitoring.model_copy(
                update={"logging": spec.monitoring.logging.model_copy(update={"elk": both})}
            )
        }
    )
    with pytest.raises(UnsafeValue):
        render(replace(target, spec=spec))


# --- Filebeat --------------------------------------------------------------------------------------


TLS = {"certificate": "${file:beats.crt}", "key": "${file:beats.key}"}
CENTRAL_HOSTS = [
    {"name": "web", "address": "10.0.0.1", "connection": "ssh", "roles": ["engine", "edge"]},
    {"name": "logs", "address": "fd00::9", "connection": "ssh", "roles": ["logging"]},
]


def central_overrides(tls: dict | None = TLS) -> dict:
    overrides = elk_overrides(hosts=CENTRAL_HOSTS, state={"history": "postgres", "postgres_dsn": "${env:PG}"})
    if tls is not None:
        overrides["monitoring"]["logging"]["elk"]["tls"] = tls
    return overrides


def test_filebeat_tails_the_deploy_roots_logs_and_tags_what_the_pipeline_routes(make_target):
    overrides = central_overrides()
    web, central = make_target(overrides, host="web"), make_target(overrides, host="logs")
    config = yaml.safe_load(render(web)["filebeat.yml"])
    inputs = {i["fields"]["type"]: i for i in config["filebeat.inputs"]}
    assert {t: i["paths"] for t, i in inputs.items()} == {
        "engine": [f"{web.root}/logs/engine.log"],
        "nginx": [f"{web.root}/logs/nginx-access.log"],
    }
    assert set(inputs) == set(grok_patterns(parsed_pipeline(central)))
    assert len({i["id"] for i in inputs.values()}) == 2 and {i["type"] for i in inputs.values()} == {"filestream"}
    # Both writers put one record per line (see the traceback test), so no multiline joining.
    assert all("multiline" not in json.dumps(i) for i in inputs.values())
    assert config["output.logstash"]["hosts"] == ["[fd00::9]:5044"]
    assert config["path.data"] == f"{web.root}/data/filebeat"
    assert PIPELINE_FILE not in render(web) and PIPELINE_FILE in render(central)
    assert attrs(blocks(parsed_pipeline(central), "beats")[0])["host"] == "fd00::9"


def test_a_central_logstash_listens_on_its_own_address_over_tls(make_target):
    overrides = central_overrides({**TLS, "certificate_authority": "${file:ca.crt}"})
    web, central = make_target(overrides, host="web"), make_target(overrides, host="logs")
    beats = attrs(blocks(parsed_pipeline(central), "beats")[0])
    secrets = f"{central.root}/current/elk/secrets"
    assert beats == {
        "host": "fd00::9",
        "port": 5044,
        "ssl_enabled": "true",  # lscl keeps bare words as text
        "ssl_certificate": f"{secrets}/monitoring.logging.elk.tls.certificate",
        "ssl_key": f"{secrets}/monitoring.logging.elk.tls.key",
    }
    for host in (web, central):  # the central host ships its own logs to the same TLS listener
        output = yaml.safe_load(render(host)["filebeat.yml"])["output.logstash"]
        assert output == {
            "hosts": ["[fd00::9]:5044"],
            "ssl": {
                "enabled": True,
                "certificate_authorities": [f"{host.root}/current/elk/secrets/{CA}"],
                "verification_mode": "full",
            },
        }
    values = {CERT: "CERT", KEY: "KEY", CA: "CA"}
    assert secret_files(web, values) == {f"secrets/{CA}": "CA"}
    assert secret_files(central, values) == {f"secrets/{n}": v for n, v in values.items()}
    text = "".join(render(central).values())
    assert "beats.key" not in text and "KEY" not in text


def test_without_a_ca_filebeat_trusts_the_certificate_itself(make_target):
    web = make_target(central_overrides(), host="web")
    output = yaml.safe_load(render(web)["filebeat.yml"])["output.logstash"]
    assert output["ssl"]["certificate_authorities"] == [f"{web.root}/current/elk/secrets/{CERT}"]
    assert secret_files(web, {CERT: "CERT", KEY: "KEY"}) == {f"secrets/{CERT}": "CERT"}


def test_a_central_logstash_without_tls_is_refused(make_target):
    with pytest.raises(SpecError, match="needs TLS"):
        make_target(central_overrides(tls=None))


@pytest.mark.parametrize("tls", [None, TLS])
def test_per_host_logstash_stays_on_loopback_without_tls(make_target, tls):
    overrides = elk_overrides()
    overrides["monitoring"]["logging"]["elk"]["tls"] = tls
    target = make_target(overrides)
    assert attrs(blocks(parsed_pipeline(target), "beats")[0]) == {"host": "127.0.0.1", "port": 5044}
    assert "ssl" not in yaml.safe_load(render(target)["filebeat.yml"])["output.logstash"]
    assert secret_files(target, {CERT: "CERT", KEY: "KEY"}) == {}


def test_filebeat_and_logstash_configs_are_checked_where_they_run(make_target):
    overrides = central_overrides()
    checks = {host: build_bundle(make_target(overrides, host=host)).checks for host in ("web", "logs")}
    filebeat = ("elk", "filebeat test config -c {dir}/filebeat.yml")
    assert filebeat in checks["web"] and filebeat in checks["logs"]
    logstash = [c for folder, c in checks["logs"] if folder == "elk" and "logstash" in c]
    assert logstash == [
        "/usr/share/logstash/bin/logstash --path.settings /etc/logstash --path.data {root}/tmp/logstash-check "
        "--config.test_and_exit -f {dir}/logstash/pipeline.conf"
    ]
    assert not [c for _, c in checks["web"] if "logstash" in c]


# --- real lines ------------------------------------------------------------------------------------


def wait_for(url: str, process: subprocess.Popen, stderr: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited at start: {stderr.read_text()[-2000:]}"
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    pytest.fail(f"{process.args[0]} did not answer {url}: {stderr.read_text()[-2000:]}")


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": {"message": "upstream exploded"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def traffic(make_target, tmp_path):
    """The rendered engine behind the rendered nginx; requests go through nginx. Yields the
    target and the responses; both processes are stopped by pid whatever happens."""
    nginx_bin = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not nginx_bin:
        pytest.fail("nginx is not installed: apt-get install nginx (these tests need the real binary)")
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)  # the `broken` model answers 500
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    target = make_target(
        {
            **elk_overrides(ports={"http": free_port(), "engine": free_port()}),
            "models": {
                "default": "local",
                "providers": {
                    "local": {"provider": "builtin"},
                    "broken": {"provider": "openai", "api_base": f"http://127.0.0.1:{upstream.server_address[1]}/v1"},
                },
            },
        }
    )
    root = Path(target.root)
    for sub in ("logs", "run", "data", "tmp/nginx", "current"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    settings = root / "current" / "settings.json"
    settings.write_text(engine_renderer.render(target)["settings.json"])
    for rel, text in nginx_renderer.render(target).items():
        (root / "current" / rel).write_text(text)
    processes = []
    try:
        cmd = [sys.executable, "-m", "assistantctl.engine", "--settings", str(settings)]
        with open(root / "engine.stderr", "wb") as stderr:  # the child keeps its own descriptor
            processes.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr))
        wait_for(f"http://127.0.0.1:{target.spec.deploy.ports.engine}/health", processes[-1], root / "engine.stderr")
        error_log = f"{root}/logs/nginx-error.log"
        cmd = [nginx_bin, "-p", f"{root}/current/", "-c", "nginx.conf", "-e", error_log]
        processes.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{target.spec.deploy.ports.http}"
        wait_for(f"{base}/health", processes[-1], Path(error_log))
        alice, bob = bearer(create_key(settings, "alice")), bearer(create_key(settings, "bob"))
        wait_for_key(base, alice)
        wait_for_key(base, bob)
        with httpx.Client(base_url=base, timeout=20, headers={"User-Agent": 'probe "7" \\ x'}) as client:
            responses = [
                client.post("/api/v1/chat", json={"message": "hello"}, headers=alice),
                client.post("/api/v1/chat", json={"message": "hi", "model": "broken"}, headers=bob),
                client.get("/nowhere?q=a b"),
            ]
        time.sleep(0.5)  # the engine writes its log every 0.2 s
        yield target, responses
    finally:
        for process in reversed(processes):
            stop_process(process, grace=10)
        upstream.shutdown()
        upstream.server_close()


def kv(text: str) -> dict[str, str]:
    """What Logstash's kv filter (field_split " ", value_split "=") makes of the `kv` capture."""
    return dict(pair.split("=", 1) for pair in text.split())


def test_real_engine_and_nginx_lines_match_the_rendered_groks(traffic):
    target, responses = traffic
    statuses = [r.status_code for r in responses]
    assert statuses[0] == 200 and statuses[1] >= 500 and statuses[2] == 404, [r.text for r in responses]
    patterns = grok_patterns(parsed_pipeline(target))
    engine_grok, nginx_grok = Grok(patterns["engine"]), Grok(patterns["nginx"])
    logs = Path(target.root) / "logs"
    engine_lines = (logs / "engine.log").read_text().splitlines()
    nginx_lines = (logs / "nginx-access.log").read_text().splitlines()
    unparsed = [line for line in engine_lines if engine_grok.match(line) is None]
    assert unparsed == [] and len(engine_lines) >= 4
    unparsed = [line for line in nginx_lines if nginx_grok.match(line) is None]
    assert unparsed == [] and len(nginx_lines) >= 4

    events = [engine_grok.match(line) for line in engine_lines]
    now = datetime.now(UTC)
    for event in events:
        stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert now - timedelta(seconds=60) < stamp <= now
        assert event["level"] in {"INFO", "WARNING"}
    access = {kv(e["kv"])["request_id"]: e | kv(e["kv"]) for e in events if e["logger"] == "engine.access"}
    chats = {rid: e for rid, e in access.items() if e["route"] == "/api/v1/chat"}
    by_user = {e["user"]: e for e in chats.values()}
    assert by_user["alice"]["status"] == "200" and by_user["bob"]["status"] == str(statuses[1])
    assert all(float(e["latency_ms"]) >= 0 and e["method"] == "POST" for e in chats.values())
    failures = [e | kv(e["kv"]) for e in events if e["logger"] == "engine.model" and e["level"] == "WARNING"]
    assert [(f["user"], f["model"], f["outcome"]) for f in failures][-1] == ("bob", "broken", "error")
    assert failures[-1]["msg"] == r"upstream 500: {\"error\": {\"message\": \"upstream exploded\"}}"
    assert failures[-1]["request_id"] == by_user["bob"]["request_id"]

    # nginx hands its $request_id to the engine: the two logs join on it.
    requests = {n["request_id"]: n for n in map(nginx_grok.match, nginx_lines)}
    for rid, event in chats.items():
        assert requests[rid]["status"] == event["status"]
        assert requests[rid]["method"] == "POST" and requests[rid]["path"] == "/api/v1/chat"
        assert float(requests[rid]["request_time"]) >= 0 and int(requests[rid]["bytes"]) > 0
        assert requests[rid]["upstream_response_time"] not in ("", "-")
        assert requests[rid]["user_agent"] == r"probe \x227\x22 \x5C x"
    stamp = datetime.strptime(requests[by_user["alice"]["request_id"]]["timestamp"], "%d/%b/%Y:%H:%M:%S %z")
    assert now - timedelta(seconds=60) < stamp <= now + timedelta(seconds=1)
    missing = [n for n in map(nginx_grok.match, nginx_lines) if n["status"] == "404" and "nowhere" in n["path"]]
    assert missing, nginx_lines


def test_a_traceback_is_one_line_and_its_message_parses(make_target):
    """Uses the engine's own formatter: an exception with quotes and newlines stays one record."""
    engine_grok = Grok(grok_patterns(parsed_pipeline(make_target(elk_overrides())))["engine"])
    try:
        raise ValueError('bad "quote"\nsecond line')
    except ValueError:
        record = logging.LogRecord("engine.app", logging.ERROR, __file__, 1, "unhandled error", None, sys.exc_info())
    record.fields = {"request_id": "9f1c2e", "route": "/api/v1/chat", "user": None}
    line = TextFormatter(Masker([])).format(record)
    assert "\n" not in line
    event = engine_grok.match(line)
    assert event is not None, line
    assert kv(event["kv"]) == {"request_id": "9f1c2e", "route": "/api/v1/chat", "user": "-"}
    assert event["msg"].startswith("unhandled error Traceback") and r"bad \"quote\"\nsecond line" in event["msg"]
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", event["timestamp"])
