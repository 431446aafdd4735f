"""renderers/nginx.py against the real nginx: `nginx -t` on rendered releases, escaping of every spec
string that reaches the config, and one runtime proof in front of a stand-in engine."""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Self

import httpx
import pytest
from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect as ws_connect

from assistantctl.engine.http_protocol import DRAIN_SECONDS, KEEP_ALIVE_SECONDS
from assistantctl.renderers import render_target
from assistantctl.renderers.escape import UnsafeValue
from assistantctl.renderers.nginx import ACCESS_LOG_FORMAT, RENDERER, render
from assistantctl.schema.loader import SpecError
from processes import stop_process

INJECTED = "return 418"


def nginx_bin() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail("nginx is not installed: apt-get install nginx (these tests need the real binary)")
    return found


def stage(target, write_files, make_root) -> Path:
    """Render the target's nginx files into <root>/releases/x/nginx/, as apply stages them."""
    root = make_root(Path(target.root))
    return write_files(root / "releases" / "x" / "nginx", render(target))


def nginx(folder: Path, root: str, *flags: str) -> subprocess.CompletedProcess:
    cmd = [nginx_bin(), *flags, "-p", f"{folder}/", "-c", "nginx.conf", "-e", f"{root}/logs/nginx-error.log"]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)


def assert_valid(folder: Path, root: str) -> str:
    """`nginx -t` passes; returns `nginx -T`, the configuration as nginx parsed it."""
    checked = nginx(folder, root, "-t")
    assert checked.returncode == 0, checked.stderr
    return nginx(folder, root, "-T").stdout


def self_signed(folder: Path, name: str = "assistant.example.com") -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def rich_overrides(cert: str, key: str) -> dict:
    return {
        "channels": {
            "websocket": {"path": "/ws/chat", "heartbeat_seconds": 20},
            "telegram": {
                "enabled": True,
                "bot_token": "${env:TG_TOKEN}",
                "webhook_secret": "${env:TG_SECRET}",
                "path": "/hooks/tg",
            },
            "wecom": {
                "enabled": True,
                "corp_id": "ww123",
                "token": "${env:WECOM_TOKEN}",
                "encoding_aes_key": "${env:WECOM_AES}",
            },
            "whatsapp": {
                "enabled": True,
                "phone_number_id": "123",
                "access_token": "${env:WA_TOKEN}",
                "verify_token": "${env:WA_VERIFY}",
                "app_secret": "${file:/run/secrets/wa}",
            },
        },
        "limits": {
            "rate_limit": {"requests_per_minute": 120, "burst": 10},
            "max_body_kilobytes": 1024,
            "timeouts": {"connect_seconds": 2.5, "read_seconds": 30, "request_seconds": 90},
        },
        "monitoring": {"metrics": {"path": "/internal/metrics", "allow_networks": ["10.0.0.0/8", "fd00::/8"]}},
        "security": {
            "tls": {"enabled": True, "certificate": cert, "key": key},
            "allowed_networks": ["192.168.0.0/16", "127.0.0.0/8", "::1/128"],
            "edge_secret": "${env:EDGE_SECRET}",
        },
        "deploy": {
            "server_name": "assistant.example.com",
            "ports": {"http": 18080, "https": 18443, "engine": 18081},
            "hosts": [
                {"name": "edge1", "roles": ["engine", "edge"]},
                {
                    "name": "worker",
                    "address": "10.0.0.7",
                    "connection": "ssh",
                    "ssh_user": "deploy",
                    "roles": ["engine"],
                },
                {
                    "name": "worker6",
                    "address": "fd00::7",
                    "connection": "ssh",
                    "ssh_user": "deploy",
                    "roles": ["engine"],
                },
            ],
            "state": {"history": "postgres", "postgres_dsn": "${env:PG_DSN}"},
        },
    }


def test_default_spec_passes_nginx_t(make_target, write_files, make_root):
    target = make_target()
    parsed = assert_valid(stage(target, write_files, make_root), target.root)
    assert "daemon off;" in parsed and "include site.conf;" in parsed
    assert f'pid "{target.root}/run/nginx.pid";' in parsed
    assert 'server "127.0.0.1:8081"' in parsed and "keepalive 32;" in parsed
    assert "rate=600r/m" in parsed and "burst=100 nodelay" in parsed and "limit_req_status 429;" in parsed
    assert "client_max_body_size 256k;" in parsed
    assert f"log_format assistant '{ACCESS_LOG_FORMAT}';" in parsed
    assert "/webhooks/" not in parsed  # no channel with a webhook is enabled
    assert "ssl" not in parsed.split("include site.conf;")[1]


def test_nginx_closes_idle_engine_connections_before_the_engine_does(make_target):
    """The side that closes an idle keep-alive connection must be nginx: when the engine closes one
    just as nginx sends a request on it, nginx answers 502 (it never retries a POST)."""
    site = next(text for path, text in render(make_target()).items() if str(path).endswith("site.conf"))
    upstream = site.split("upstream engine {", 1)[1].split("}", 1)[0]
    nginx_idle = int(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    assert nginx_idle < DRAIN_SECONDS < KEEP_ALIVE_SECONDS


def test_rich_spec_with_tls_channels_and_allow_lists_passes_nginx_t(make_target, write_files, make_root, tmp_path):
    target = make_target(rich_overrides(*self_signed(tmp_path / "tls")), host="edge1")
    parsed = assert_valid(stage(target, write_files, make_root), target.root)
    for expected in (
        'server "127.0.0.1:18081"',
        'server "10.0.0.7:18081"',
        'server "[fd00::7]:18081"',
        "listen 18443 ssl http2;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "return 301 https://$host:18443$request_uri;",
        'add_header Strict-Transport-Security "max-age=31536000" always;',
        'server_name "assistant.example.com";',
        'location = "/hooks/tg"',
        'location = "/webhooks/wecom"',
        'location = "/webhooks/whatsapp"',
        'location = "/ws/chat"',
        "proxy_read_timeout 60s;",
        'location = "/internal/metrics"',
        'allow "10.0.0.0/8";',
        'allow "fd00::/8";',
        'allow "192.168.0.0/16";',
        'allow "::1/128";',
        "rate=120r/m",
        "client_max_body_size 1024k;",
        "proxy_connect_timeout 3s;",
        "proxy_read_timeout 95s;",
    ):
        assert expected in parsed, expected


def test_edge_without_a_reachable_engine_is_refused(make_target):
    target = make_target(
        {
            "deploy": {
                "hosts": [
                    {"name": "edge", "roles": ["edge"]},
                    {"name": "both", "address": "10.0.0.2", "roles": ["engine", "edge"]},
                ]
            }
        },
        host="edge",
    )
    with pytest.raises(ValueError, match="no reachable engine"):
        render(target)


def test_render_is_deterministic(make_target, tmp_path):
    overrides = rich_overrides("/etc/ssl/a.pem", "/etc/ssl/a.key")
    assert render(make_target(overrides, host="edge1")) == render(make_target(overrides, host="edge1"))
    assert render_target(make_target(), only={"nginx"}) == render_target(make_target(), only={"nginx"})


HOSTILE = ["a;return 418;", "a}", "a\nreturn 418;", 'a"b', "a'b", "$host", "a{", "a b", "a#b", "a\\b"]
HOSTILE_FIELDS = {
    "server_name": lambda v: {"deploy": {"server_name": v}},
    "websocket.path": lambda v: {"channels": {"websocket": {"path": "/" + v}}},
    "telegram.path": lambda v: {
        "channels": {
            "telegram": {"enabled": True, "bot_token": "${env:T}", "webhook_secret": "${env:S}", "path": "/" + v}
        }
    },
    "metrics.path": lambda v: {"monitoring": {"metrics": {"path": "/" + v}}},
    "metrics.allow_networks": lambda v: {"monitoring": {"metrics": {"allow_networks": [v]}}},
    "allowed_networks": lambda v: {"security": {"allowed_networks": ["10.0.0.0/8", v]}},
    "tls.certificate": lambda v: {"security": {"tls": {"enabled": True, "certificate": "/c" + v, "key": "/k"}}},
    "tls.key": lambda v: {"security": {"tls": {"enabled": True, "certificate": "/c", "key": "/k" + v}}},
    "engine address": lambda v: {
        "deploy": {"hosts": [{"name": "local", "roles": ["edge"]}, {"name": "w", "address": v, "roles": ["engine"]}]},
        "security": {"edge_secret": "${env:EDGE_SECRET}"},
    },
    "host name": lambda v: {"deploy": {"hosts": [{"name": v, "roles": ["engine", "edge"]}]}},
}


@pytest.mark.parametrize("field", sorted(HOSTILE_FIELDS))
def test_hostile_strings_are_refused_or_stay_inert(field, make_target, write_files, make_root, tmp_path):
    for value in HOSTILE:
        try:
            target = make_target(HOSTILE_FIELDS[field](value))
            files = render(target)
        except (SpecError, UnsafeValue):
            continue
        tls = target.spec.security.tls
        if tls.enabled:  # give nginx real files at whatever names got through
            cert, key = self_signed(tmp_path / "tls")
            for wanted, made in ((tls.certificate, cert), (tls.key, key)):
                Path(wanted).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(made, wanted)
        folder = write_files(make_root(Path(target.root)) / "releases" / "x" / "nginx", files)
        assert not injected(assert_valid(folder, target.root)), (field, value)


def injected(parsed: str) -> list[str]:
    """Lines of `nginx -T` that start with the payload's directive (outside any quoted string)."""
    return [line for line in parsed.splitlines() if line.strip().startswith(INJECTED)]


@pytest.mark.parametrize("value", HOSTILE)
def test_nginx_str_keeps_values_the_schema_never_saw_inert(value, make_target, write_files, make_root):
    """A future looser field must not open an injection: bypass validation and render anyway."""
    target = make_target(
        {"channels": {"telegram": {"enabled": True, "bot_token": "${env:T}", "webhook_secret": "${env:S}"}}}
    )
    spec = target.spec
    channels = spec.channels.model_copy(
        update={
            "websocket": spec.channels.websocket.model_copy(update={"path": "/" + value}),
            "telegram": spec.channels.telegram.model_copy(update={"path": "/t" + value}),
        }
    )
    deploy = spec.deploy.model_copy(update={"server_name": "x" + value})
    target = replace(target, spec=spec.model_copy(update={"channels": channels, "deploy": deploy}))
    try:
        files = render(target)
    except UnsafeValue:
        assert "$" in value or "\n" in value, value  # only control characters and `$` are refused
        return
    folder = write_files(make_root(Path(target.root)) / "releases" / "x" / "nginx", files)
    assert not injected(assert_valid(folder, target.root)), value


def test_root_with_spaces_and_quotes_stays_one_argument(make_target, write_files, make_root, tmp_path):
    target = make_target(root=tmp_path / 'my "deploy" root')
    parsed = assert_valid(stage(target, write_files, make_root), target.root)
    assert 'access_log "' + target.root.replace('"', '\\"') + '/logs/nginx-access.log" assistant;' in parsed
    with pytest.raises(UnsafeValue):
        render(make_target(root=tmp_path / "$document_root"))


def test_check_command_validates_the_staged_folder(make_target, write_files, make_root):
    target = make_target()
    folder = stage(target, write_files, make_root)
    command = RENDERER.check.replace("{dir}", str(folder)).replace("{root}", target.root).split()
    assert command[0] == "nginx"
    assert subprocess.run([nginx_bin(), *command[1:]], check=False, capture_output=True).returncode == 0
    (folder / "site.conf").write_text("server { listen 1; bogus_directive on; }\n")
    assert subprocess.run([nginx_bin(), *command[1:]], check=False, capture_output=True).returncode != 0


# --- runtime: nginx in front of a stand-in engine -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _engine_stand_in(request: web.Request) -> web.StreamResponse:
    if request.path == "/ws":
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + message.data)
        return ws
    if request.path == "/api/big":
        return web.Response(body=b"x" * 3_000_000)
    body = await request.read()
    return web.json_response(
        {
            "path": request.path,
            "body_bytes": len(body),
            "request_id": request.headers.get("X-Request-ID"),
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "connection": request.headers.get("Connection"),
        }
    )


class EngineStandIn:
    """A loopback aiohttp server on the engine port, run on its own thread and loop."""

    def __init__(self, port: int):
        self.port, self.loop = port, asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", _engine_stand_in)
        self.runner = web.AppRunner(app)
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "nginx exited at start"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on {port}")


@pytest.fixture
def running_nginx(make_target, write_files, make_root):
    """Start nginx from a rendered release; always stopped by pid, whatever the test does."""
    processes: list[subprocess.Popen] = []

    def start(overrides: dict):
        target = make_target(overrides)
        folder = stage(target, write_files, make_root)
        assert_valid(folder, target.root)
        cmd = [nginx_bin(), "-p", f"{folder}/", "-c", "nginx.conf", "-e", f"{target.root}/logs/nginx-error.log"]
        processes.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_for_port(target.spec.deploy.ports.http, processes[-1])
        return target

    yield start
    for process in processes:
        stop_process(process, grace=10)


def test_nginx_proxies_health_api_and_websocket_and_guards_metrics(running_nginx):
    http, engine = free_port(), free_port()
    with EngineStandIn(engine):
        target = running_nginx(
            {
                "deploy": {"ports": {"http": http, "engine": engine}},
                "limits": {"rate_limit": {"requests_per_minute": 60, "burst": 5}},
                "monitoring": {"metrics": {"allow_networks": ["10.0.0.0/8"]}},
                "security": {"allowed_networks": ["127.0.0.0/8"]},
            }
        )
        base = f"http://127.0.0.1:{http}"
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/metrics").status_code == 403  # loopback is not a monitoring network
            api = client.post("/api/v1/chat", content=b"y" * 200_000, headers={"X-Forwarded-For": "6.6.6.6"})
            assert api.status_code == 200, api.text  # a body near the limit never needs a temp file
            seen = api.json()
            assert seen["body_bytes"] == 200_000 and seen["forwarded_for"] == "127.0.0.1"
            assert seen["request_id"] and seen["request_id"] == api.headers["X-Request-ID"]
            assert api.headers["X-Content-Type-Options"] == "nosniff"
            assert len(client.get("/api/big").content) == 3_000_000  # not spooled to disk either
            assert client.post("/api/v1/chat", content=b"z" * 300_000).status_code == 413
            with ws_connect(f"ws://127.0.0.1:{http}/ws", open_timeout=10) as ws:  # 101 through nginx
                ws.send("hi")
                assert ws.recv(timeout=10) == "echo:hi"
            statuses = [client.get("/v1/models").status_code for _ in range(30)]
            assert 429 in statuses and statuses[0] == 200
    log = Path(target.root, "logs", "nginx-access.log").read_text()
    assert "request_time=" in log and 'upstream_response_time="' in log and "request_id=" in log


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_serves_https_redirects_http_and_keeps_plain_health(running_nginx, tmp_path):
    http, https, engine = free_port(), free_port(), free_port()
    cert, key = self_signed(tmp_path / "tls", "localhost")
    with EngineStandIn(engine):
        running_nginx(
            {
                "deploy": {"ports": {"http": http, "https": https, "engine": engine}},
                "security": {"tls": {"enabled": True, "certificate": cert, "key": key}},
            }
        )
        assert refuses_tls_1_1(https)
        with httpx.Client(verify=ssl.create_default_context(cafile=cert), timeout=10) as client:
            secure = client.get(f"https://localhost:{https}/api/v1/chat")
            assert secure.status_code == 200 and secure.extensions["http_version"] in (b"HTTP/1.1", b"HTTP/2")
            assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
            moved = client.get(f"http://localhost:{http}/api/v1/chat?x=1")
            assert moved.status_code == 301
            assert moved.headers["Location"] == f"https://localhost:{https}/api/v1/chat?x=1"
            assert client.get(f"http://localhost:{http}/health").status_code == 200


def refuses_tls_1_1(port: int) -> bool:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    context.minimum_version, context.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw):
            return False
    except ssl.SSLError as error:
        return "NO_PROTOCOLS_AVAILABLE" not in str(error)  # refused by nginx, not by this client
