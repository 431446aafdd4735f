"""The pydantic models of assistant.yaml: the whole spec, section by section.

Cross-section rules (a channel naming an undeclared model, two services on one port...) live in
`schema.checks`; this module only describes shapes and per-field constraints.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from .types import (
    HostName,
    IPNetwork,
    IPv4Addr,
    Name,
    Percent,
    Port,
    PositiveSeconds,
    SafePath,
    SecretRef,
    ServerName,
    UrlPath,
)


class Strict(BaseModel):
    """Unknown keys are errors everywhere in the spec, and values are never coerced (a quoted "600"
    is not an integer), exactly as the published JSON Schema says."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- models -----------------------------------------------------------------------------------

Provider = Literal["builtin", "openai", "anthropic", "ollama"]


class ModelSpec(Strict):
    provider: Provider = Field(description="Adapter used to talk to this model.")
    model: str | None = Field(None, max_length=200, description="Upstream model id; defaults to the key.")
    api_base: HttpUrl | None = Field(None, description="Base URL of the provider's API.")
    api_key: SecretRef | None = Field(
        None, description="The provider's API key as ${env:NAME} or ${file:path}; required by anthropic."
    )
    connect_timeout_seconds: PositiveSeconds = Field(5, description="Seconds to open a connection to the provider.")
    read_timeout_seconds: PositiveSeconds = Field(
        60, description="Seconds to wait for the provider's next bytes before the call fails (and falls back)."
    )
    max_concurrency: int = Field(64, ge=1, le=100_000, description="In-flight calls to this model.")
    requests_per_minute: int | None = Field(
        None,
        ge=1,
        description="Upstream quota for this model: requests per minute from the whole deployment (every "
        "user, worker and node together); past it requests for this model get 429 with Retry-After.",
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description="Upstream quota for this model in tokens (input + output) per minute, deployment-wide. "
        "A call is admitted while any are left and charged its real usage afterwards.",
    )
    max_tokens: int | None = Field(None, ge=1, description="Cap on tokens in a reply; unset: the provider's own.")
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature, 0 (repeatable) to 2; unset: the provider's default."
    )

    @model_validator(mode="after")
    def _provider_needs(self) -> ModelSpec:
        if self.provider == "anthropic" and self.api_key is None:
            raise ValueError("provider 'anthropic' needs api_key: ${env:ANTHROPIC_API_KEY}")
        if self.provider == "builtin" and (self.api_base or self.api_key):
            raise ValueError("provider 'builtin' runs offline: remove api_base and api_key")
        return self


class Models(Strict):
    default: Name = Field(description="Model that answers unless a channel names another.")
    fallback: list[Name] = Field(default_factory=list, description="Tried in order when a call fails.")
    providers: dict[Name, ModelSpec] = Field(
        min_length=1, description="The models, by the name channels and `default` use for them; at least one."
    )


# --- channels ---------------------------------------------------------------------------------


class Channel(Strict):
    enabled: bool = Field(False, description="Serve this channel.")
    model: Name | None = Field(None, description="Model for this channel; the default when unset.")


class WebChannel(Channel):
    enabled: bool = Field(True, description="Serve the HTTP chat API (/api/v1/chat, /v1/chat/completions).")
    cors_origins: list[HttpUrl] = Field(
        default_factory=list,
        description="Browser origins meant to call the API from other sites. Reserved: no CORS headers are "
        "sent yet, so today only pages on the assistant's own origin can call it.",
    )


class WebSocketChannel(Channel):
    enabled: bool = Field(True, description="Serve chat over a WebSocket at `path`.")
    path: UrlPath = Field("/ws", description="URL path of the WebSocket endpoint.")
    heartbeat_seconds: PositiveSeconds = Field(
        30, description="Seconds between pings; nginx drops a connection silent for three of them."
    )


class TelegramChannel(Channel):
    bot_token: SecretRef | None = Field(None, description="The bot's token from @BotFather; required when enabled.")
    webhook_secret: SecretRef | None = Field(
        None, description="Checked against Telegram's secret-token header on every update; required when enabled."
    )
    path: UrlPath = Field("/webhooks/telegram", description="URL path Telegram posts updates to.")
    allowed_users: list[str] = Field(
        default_factory=list, description="Telegram user ids or usernames who may chat; empty: everyone."
    )


class WeComChannel(Channel):
    corp_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9]+$", description="The WeCom corporation id; required when enabled."
    )
    agent_id: int | None = Field(None, description="The app's AgentId, used to send replies; unset: the message's own.")
    token: SecretRef | None = Field(None, description="The callback Token that signs requests; required when enabled.")
    encoding_aes_key: SecretRef | None = Field(
        None, description="The callback EncodingAESKey that encrypts messages; required when enabled."
    )
    secret: SecretRef | None = Field(None, description="The app Secret, needed to send replies.")
    path: UrlPath = Field("/webhooks/wecom", description="URL path WeCom calls back.")


class WhatsAppChannel(Channel):
    phone_number_id: str | None = Field(
        None, pattern=r"^[0-9]+$", description="The WhatsApp Business phone number id (digits, quoted); required."
    )
    access_token: SecretRef | None = Field(
        None, description="Graph API token used to send replies; required when enabled."
    )
    verify_token: SecretRef | None = Field(
        None, description="Echoed in Meta's webhook verification handshake; required when enabled."
    )
    app_secret: SecretRef | None = Field(
        None, description="Checks the X-Hub-Signature-256 of every delivery; required when enabled."
    )
    path: UrlPath = Field("/webhooks/whatsapp", description="URL path Meta posts deliveries to.")


class Channels(Strict):
    web: WebChannel = Field(WebChannel(), description="HTTP chat API; on by default.")
    websocket: WebSocketChannel = Field(WebSocketChannel(), description="WebSocket chat; on by default.")
    telegram: TelegramChannel = Field(TelegramChannel(), description="A Telegram bot, by webhook; off by default.")
    wecom: WeComChannel = Field(WeComChannel(), description="A WeCom (WeChat Work) app; off by default.")
    whatsapp: WhatsAppChannel = Field(WhatsAppChannel(), description="WhatsApp Business Cloud API; off by default.")

    @model_validator(mode="after")
    def _enabled_channels_have_credentials(self) -> Channels:
        needs = {
            "telegram": ("bot_token", "webhook_secret"),
            "wecom": ("corp_id", "token", "encoding_aes_key"),
            "whatsapp": ("phone_number_id", "access_token", "verify_token", "app_secret"),
        }
        for name, fields in needs.items():
            channel = getattr(self, name)
            missing = [f for f in fields if channel.enabled and getattr(channel, f) is None]
            if missing:
                raise ValueError(f"channel '{name}' is enabled but lacks: {', '.join(missing)}")
        return self


# --- skills -----------------------------------------------------------------------------------


class Skill(Strict):
    name: Name = Field(description="The skill's name in its error messages and logs.")
    enabled: bool = Field(True, description="Run this skill; false keeps it declared but idle.")
    entrypoint: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="Python 'module:callable' returning the skill; 'builtin:<name>' for shipped ones "
        "(system_prompt, reply_limit, redact).",
    )
    hooks: list[Literal["pre", "post"]] = Field(
        default_factory=lambda: ["pre"],
        min_length=1,
        description="pre: runs on the messages before the model; post: on the complete reply.",
    )
    timeout_seconds: PositiveSeconds = Field(10, description="Seconds one run may take before it is cut off.")
    config: dict[Name, str | int | float | bool] = Field(
        default_factory=dict, description="Options passed to the skill as they are; each skill documents its own."
    )


# --- limits -----------------------------------------------------------------------------------


class RateLimit(Strict):
    requests_per_minute: int = Field(60, ge=1, description="Requests each key may make per minute, sustained.")
    burst: int = Field(20, ge=1, description="Requests a key may make at once above the per-minute rate.")
    key: Literal["user", "ip"] = Field(
        "user", description="What is counted: the authenticated user, or the client's IP address."
    )


class Timeouts(Strict):
    connect_seconds: PositiveSeconds = Field(5, description="Seconds nginx waits to connect to the engine.")
    read_seconds: PositiveSeconds = Field(
        60, description="Seconds nginx waits between two writes of a request to the engine before it gives up."
    )
    request_seconds: PositiveSeconds = Field(
        120,
        description="Seconds a whole request may take in the engine; also how long a stopping engine lets "
        "requests in flight finish.",
    )
    header_seconds: PositiveSeconds = Field(
        10,
        description="A request's headers must arrive within this long, or the engine answers 408 and closes the "
        "connection (a client sending half a request, or nothing, no longer holds it).",
    )
    body_seconds: PositiveSeconds = Field(
        30,
        description="A request's body must arrive within this long after its headers, or the engine answers 408 "
        "(a body shorter than its Content-Length no longer hangs).",
    )


class Concurrency(Strict):
    workers: int = Field(2, ge=1, le=64, description="Engine worker processes per node.")
    max_in_flight: int = Field(256, ge=1, description="Concurrent requests per worker before queueing.")
    queue_size: int = Field(
        1024,
        ge=0,
        description="Calls that may wait, per model and worker, for one of the model's max_concurrency slots; past "
        "it a call skips to the next fallback model. 0: no waiting.",
    )


class GlobalRateLimit(Strict):
    requests_per_minute: int = Field(ge=1, description="Requests per minute for the whole deployment.")
    burst: int = Field(ge=1, description="Requests admitted at once before the per-minute rate applies.")


class Limits(Strict):
    rate_limit: RateLimit = Field(
        RateLimit(),
        description="Requests per minute per user (or client IP), exact across every worker and, with "
        "deploy.state.rate_limits: redis, every node.",
    )
    global_rate_limit: GlobalRateLimit | None = Field(
        None, description="Requests per minute for the whole deployment, every user together; unset: none."
    )
    daily_tokens_per_user: int | None = Field(
        None,
        ge=1,
        description="Tokens (input + output) each user may spend per UTC day; past it 429 with Retry-After "
        "until 00:00 UTC. Unset: no budget.",
    )
    timeouts: Timeouts = Field(Timeouts(), description="How long each stage of a request may take.")
    concurrency: Concurrency = Field(Concurrency(), description="Worker processes and requests in flight.")
    max_message_chars: int = Field(16_000, ge=1, description="Longest user message in characters; longer ones get 413.")
    max_body_kilobytes: int = Field(
        256, ge=1, le=1_048_576, description="Largest request body nginx accepts, in KiB; larger ones get 413."
    )


# --- monitoring -------------------------------------------------------------------------------


class Metrics(Strict):
    enabled: bool = Field(True, description="Serve Prometheus metrics at `path`.")
    path: UrlPath = Field("/metrics", description="URL path of the metrics endpoint.")
    allow_networks: list[IPNetwork] = Field(
        default_factory=lambda: [IPv4Network("127.0.0.0/8")],
        description="Networks that may read the metrics; default: 127.0.0.0/8 only.",
    )


class Alerts(Strict):
    error_rate_percent: Percent = Field(5, description="Alert when more than this % of requests answer 5xx.")
    slow_request_seconds: PositiveSeconds = Field(
        2, description="A request slower than this many seconds counts as slow."
    )
    slow_request_percent: Percent = Field(10, description="Alert when more than this % of requests are slow.")
    p99_latency_seconds: PositiveSeconds = Field(
        2, description="Alert when the 99th percentile latency exceeds this (s)."
    )
    model_failure_percent: Percent = Field(
        5, description="Alert when more than this % of a model's calls fail, time out or are rejected."
    )
    disk_used_percent: Percent = Field(85, description="Alert when a filesystem is fuller than this %.")
    memory_used_percent: Percent = Field(85, description="Alert when more than this % of memory is in use.")
    for_minutes: int = Field(
        5, ge=0, le=1440, description="Minutes a threshold must stay crossed before its alert fires; 0: at once."
    )
    instance_down_minutes: int = Field(
        1, ge=0, le=1440, description="Minutes a scrape target may be unreachable before InstanceDown fires."
    )


class Receiver(Strict):
    name: Name = Field(description="The receiver's name in Alertmanager.")
    kind: Literal["webhook", "email", "telegram"] = Field(
        description="webhook needs url; email needs email; telegram needs chat_id and bot_token."
    )
    url: HttpUrl | None = Field(None, description="Where a webhook receiver posts alerts.")
    email: str | None = Field(
        None, pattern=r"^[^@\s\"'{};]+@[A-Za-z0-9.-]+$", description="Address an email receiver writes to."
    )
    chat_id: int | None = Field(None, description="Telegram chat a telegram receiver posts to.")
    bot_token: SecretRef | None = Field(None, description="Token of the bot a telegram receiver posts as.")

    @model_validator(mode="after")
    def _kind_fields(self) -> Receiver:
        need = {"webhook": ("url",), "email": ("email",), "telegram": ("chat_id", "bot_token")}[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"receiver of kind '{self.kind}' needs: {', '.join(missing)}")
        return self


class ServiceToggle(Strict):
    enabled: bool = Field(False, description="Run this service on the hosts with the monitoring role.")
    port: Port = Field(description="TCP port the service listens on.")


class Prometheus(ServiceToggle):
    port: Port = Field(9090, description="TCP port Prometheus listens on.")
    scrape_interval_seconds: int = Field(15, ge=1, le=3600, description="Seconds between two scrapes.")
    retention_days: int = Field(15, ge=1, description="Days of samples Prometheus keeps.")


class Alertmanager(ServiceToggle):
    port: Port = Field(9093, description="TCP port Alertmanager listens on.")
    receivers: list[Receiver] = Field(
        default_factory=list, description="Where alerts go, every alert to every receiver; empty: nowhere."
    )


class Grafana(ServiceToggle):
    port: Port = Field(3000, description="TCP port Grafana listens on.")
    admin_password: SecretRef | None = Field(
        None, description="Password of Grafana's admin user; unset: Grafana's own."
    )


class Elk(Strict):
    enabled: bool = Field(False, description="Ship logs through Filebeat and Logstash to Elasticsearch.")
    elasticsearch_hosts: list[HttpUrl] = Field(
        default_factory=lambda: [HttpUrl("http://127.0.0.1:9200")],
        description="Elasticsearch URLs Logstash writes to; default: http://127.0.0.1:9200.",
    )
    index_prefix: Name = Field("assistant", description="Indices are named <prefix>-<log type>-<YYYY.MM.dd>.")


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe engine log line kept."
    )
    format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event; json: one JSON object per line."
    )
    elk: Elk = Field(Elk(), description="Central logging with the ELK stack; off by default.")


class Monitoring(Strict):
    metrics: Metrics = Field(Metrics(), description="The engine's Prometheus metrics endpoint.")
    alerts: Alerts = Field(Alerts(), description="Thresholds of the rendered alert rules.")
    prometheus: Prometheus = Field(Prometheus(), description="A Prometheus server scraping every host; off by default.")
    alertmanager: Alertmanager = Field(Alertmanager(), description="Alertmanager routing alerts; off by default.")
    grafana: Grafana = Field(Grafana(), description="Grafana with the assistant's dashboards; off by default.")
    logging: Logging = Field(Logging(), description="Log level, format and shipping.")


# --- security ---------------------------------------------------------------------------------


class Jwt(Strict):
    """Tokens from an identity provider: `sub` is the user, `scope` (space-separated) or `scopes` the
    scopes (chat, history, admin; chat and history when absent), `exp` is required."""

    enabled: bool = Field(False, description="Accept bearer tokens from an identity provider.")
    algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = Field(
        "HS256", description="HS*: a shared secret; RS256/ES256: the issuer's public key or JWKS."
    )
    secret: SecretRef | None = Field(None, description="The shared HMAC secret (HS* algorithms).")
    public_key: SecretRef | None = Field(
        None, description="The issuer's PEM public key (RS256/ES256), e.g. ${file:keys/issuer.pub}."
    )
    jwks: SecretRef | None = Field(
        None, description="A JWKS document of the issuer's keys (RS256/ES256), e.g. ${file:jwks.json}; picked by kid."
    )
    issuer: str | None = Field(None, max_length=200, description="Required `iss` claim, when set.")
    audience: str | None = Field(None, max_length=200, description="Required `aud` claim, when set.")
    max_lifetime_seconds: int = Field(
        86_400, ge=60, le=31_536_000, description="Tokens whose `exp` lies further ahead (or after `iat`) are refused."
    )
    leeway_seconds: int = Field(30, ge=0, le=600, description="Clock skew allowed on exp, nbf and iat.")

    @model_validator(mode="after")
    def _key_when_enabled(self) -> Jwt:
        if not self.enabled:
            return self
        if self.algorithm.startswith("HS"):
            if self.secret is None:
                raise ValueError("jwt is enabled but has no secret: add secret: ${env:JWT_SECRET}")
        elif (self.public_key is None) == (self.jwks is None):
            raise ValueError(f"jwt with {self.algorithm} needs exactly one of public_key or jwks")
        return self


class Tls(Strict):
    enabled: bool = Field(False, description="Serve HTTPS on ports.https; plain HTTP then redirects to it.")
    certificate: SafePath | None = Field(
        None, description="PEM certificate chain on the edge hosts; required when enabled."
    )
    key: SafePath | None = Field(None, description="PEM private key on the edge hosts; required when enabled.")
    hsts: bool = Field(True, description="Send Strict-Transport-Security, so browsers keep to HTTPS.")

    @model_validator(mode="after")
    def _files_when_enabled(self) -> Tls:
        if self.enabled and not (self.certificate and self.key):
            raise ValueError("tls is enabled: set both certificate and key")
        return self


class HistoryKey(Strict):
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Stored beside every record this key seals; never reuse an id for another key.",
    )
    key: SecretRef = Field(description="A Fernet key (or any secret, stretched to one).")


class HistoryEncryption(Strict):
    enabled: bool = Field(False, description="Encrypt stored conversation history.")
    key: SecretRef | None = Field(None, description="One key; `keys` instead to rotate keys.")
    keys: list[HistoryKey] = Field(
        default_factory=list,
        description="The keyring, current key first: new records are sealed with it, and records sealed "
        "with the others are re-sealed with it in the background (GET /admin/v1/history/keys shows "
        "progress); drop an old key once none of its records remain.",
    )

    @model_validator(mode="after")
    def _key_when_enabled(self) -> HistoryEncryption:
        if self.key is not None and self.keys:
            raise ValueError("history encryption: set key or keys, not both")
        if self.enabled and self.key is None and not self.keys:
            raise ValueError("history encryption is enabled but has no key: add key: ${env:HISTORY_KEY}")
        ids = [k.id for k in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("history encryption: every key needs an id of its own")
        return self


class PiiMasking(Strict):
    enabled: bool = Field(False, description="Mask personal data of the kinds listed.")
    kinds: list[Literal["email", "phone", "credit_card", "ip_address", "cn_resident_id"]] = Field(
        default_factory=lambda: ["email", "phone", "credit_card"],
        description=(
            "What is masked in stored history and log lines (a log line's user, when it is PII, becomes a keyed "
            "pseudonym u:<12 hex>): email; phone (7-15 digits); credit_card (13-19 digits passing the Luhn "
            "check); ip_address (IPv4); cn_resident_id (Chinese resident ID: 17 digits and a MOD 11-2 check "
            "digit 0-9 or X, with a valid birth date)."
        ),
    )
    before_model: bool = Field(
        False,
        description=(
            "Also hide these kinds from the upstream model: each value becomes a placeholder such as [email_1] "
            "and the model's reply gets the real values back before the user sees it or it is stored."
        ),
    )


class Audit(Strict):
    enabled: bool = Field(True, description="Write admin actions and history access to logs/audit.log.")


class Security(Strict):
    anonymous: Literal["loopback", "anywhere", "off"] = Field(
        "loopback",
        description="Who may chat without an API key or token, as the one anonymous user: clients on the host "
        "itself (loopback, the default), every client (anywhere: an explicit choice, flagged by plan), or nobody.",
    )
    jwt: Jwt = Field(Jwt(), description="Users identified by bearer tokens; off by default.")
    edge_secret: SecretRef | None = Field(
        None,
        description="Shared by the edges and the engine-only hosts: nginx sends it with every request, and an "
        "engine-only host admits only its edges' addresses holding it. Required when a host has the engine role "
        "without the edge role.",
    )
    tls: Tls = Field(Tls(), description="HTTPS at the edge; off by default.")
    allowed_users: list[str] = Field(default_factory=list, description="Empty: everyone may chat.")
    allowed_networks: list[IPNetwork] = Field(
        default_factory=list, description="Source networks nginx admits; empty: all."
    )
    history_encryption: HistoryEncryption = Field(
        HistoryEncryption(), description="Stored history sealed with Fernet keys; off by default."
    )
    history_retention_days: int | None = Field(
        None,
        ge=1,
        le=36_500,
        description="Delete conversation history older than this many days (checked hourly and at start); "
        "unset keeps it forever.",
    )
    pii_masking: PiiMasking = Field(
        PiiMasking(), description="Personal data masked in history and logs; off by default."
    )
    audit: Audit = Field(Audit(), description="The audit log; on by default.")


# --- deploy -----------------------------------------------------------------------------------

Role = Literal["engine", "edge", "monitoring", "logging"]


class Host(Strict):
    name: Name = Field(description="The host's name in plans, --host and the HA pair.")
    address: HostName = Field("127.0.0.1", description="DNS name or IP address SSH and the other hosts reach it at.")
    connection: Literal["local", "ssh"] = Field(
        "local", description="local: this machine, no SSH; ssh: over SSH to address."
    )
    ssh_user: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_-]*$",
        description="User to log in as; unset: from ssh_config or the current user.",
    )
    ssh_port: Port = Field(22, description="TCP port of the host's SSH server.")
    ssh_config: SafePath | None = Field(
        None,
        description="An ssh_config(5) file for the connections to this host (ssh -F): key, known hosts, "
        "jump host...; relative to the spec. Unset: the controller user's own ssh configuration.",
    )
    roles: list[Role] = Field(
        default_factory=lambda: ["engine", "edge"],
        description="What runs here: engine, edge (nginx), monitoring (Prometheus...), logging; "
        "default: engine and edge.",
    )
    python: SafePath | None = Field(
        None, description="Interpreter on the host; unset on a local host means the one running assistantctl."
    )
    ha_priority: int | None = Field(
        None, ge=1, le=254, description="keepalived priority; unset: 150 for the first HA host, 100 for the second."
    )


class Ports(Strict):
    http: Port = Field(8080, description="Port nginx serves HTTP on (the redirect to HTTPS when TLS is on).")
    https: Port = Field(8443, description="Port nginx serves HTTPS on, when TLS is enabled.")
    engine: Port = Field(8081, description="Port the engine listens on behind nginx (loopback unless engine-only).")


class HighAvailability(Strict):
    virtual_ip: IPv4Addr = Field(description="IPv4 address keepalived moves to whichever host is healthy.")
    interface: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,15}$", description="Network interface that carries the virtual IP, e.g. eth0."
    )
    router_id: int = Field(
        51, ge=1, le=255, description="VRRP virtual router id; unique among the pairs on one network."
    )
    hosts: list[Name] = Field(min_length=2, max_length=2, description="Master first, then backup.")
    auth_password: SecretRef | None = Field(None, description="VRRP password shared by the pair; unset: none.")


class SharedState(Strict):
    history: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="Where conversation history lives: a SQLite file per node, or PostgreSQL (needs "
        "postgres_dsn; required with more than one engine host).",
    )
    postgres_dsn: SecretRef | None = Field(None, description="PostgreSQL DSN (postgresql://...) for history: postgres.")
    rate_limits: Literal["memory", "redis"] = Field(
        "memory",
        description="Where the limits' buckets live. memory: each node keeps its own (its workers share a "
        "SQLite file in the data dir); redis: one set for every node (needs redis_url).",
    )
    redis_url: SecretRef | None = Field(None, description="Redis URL (redis://...) for rate_limits: redis.")


class Deploy(Strict):
    root: SafePath = Field(".assistant", description="Where releases, data and logs live; relative to the spec.")
    server_name: ServerName = Field(
        "localhost", description="nginx server_name: a DNS name, or *.example.com / www.example.*."
    )
    ports: Ports = Field(Ports(), description="TCP ports of nginx and the engine on every host.")
    hosts: list[Host] = Field(
        default_factory=lambda: [Host(name="local")],
        min_length=1,
        description="The machines to deploy to; default: this one, as host 'local'.",
    )
    ha: HighAvailability | None = Field(None, description="A virtual IP shared by two hosts; unset: no failover.")
    state: SharedState = Field(SharedState(), description="Where history and rate-limit state live.")
    serial: int = Field(1, ge=1, description="Hosts updated at once during a rolling apply.")
    max_fail_percentage: int = Field(
        0, ge=0, le=100, description="% of hosts that may fail before a rolling apply stops; 0: the first failure."
    )
    connect_timeout_seconds: int = Field(
        10,
        ge=1,
        le=300,
        description="How long to wait for an SSH host to answer (ssh ConnectTimeout) before reporting it "
        "unreachable; a reached host then gets 60 s more to answer.",
    )
    overrides: SafePath = Field(
        "overrides",
        description="Folder of files merged over the rendered ones: overrides/<renderer>/<path> matches "
        "<renderer>/<path> (YAML/JSON deep-merge, INI key by key, nginx snippets in http.d/ and server.d/); "
        "relative to the spec. A missing folder means no overrides.",
    )


# --- the whole file ---------------------------------------------------------------------------


class Spec(Strict):
    """assistant.yaml: everything about one assistant deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="assistant.yaml")

    version: Literal[1] = Field(1, description="Version of this file's format; 1.")
    name: Name = Field(
        "assistant", description="The deployment's name: in metrics, alerts and /opt/<name> on SSH hosts."
    )
    models: Models = Field(description="The language models and which one answers.")
    channels: Channels = Field(Channels(), description="Where users reach the assistant; web and websocket by default.")
    skills: list[Skill] = Field(
        default_factory=list, description="Hooks run before the model and on its reply, in order; none by default."
    )
    limits: Limits = Field(Limits(), description="Rate limits, budgets, timeouts and concurrency.")
    monitoring: Monitoring = Field(Monitoring(), description="Metrics, alerts and logs.")
    security: Security = Field(Security(), description="Who may chat, TLS, and how data is kept.")
    deploy: Deploy = Field(Deploy(), description="Hosts, ports and how a change is rolled out.")
