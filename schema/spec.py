"""The pydantic models of assistant.yaml: the whole spec, section by section.

Cross-section rules (a channel naming an undeclared model, two services on one port...) live in
`schema.checks`; this module only describes shapes and per-field constraints.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from .types import HostName, Name, Percent, Port, PositiveSeconds, SafePath, SecretRef, ServerName, UrlPath


class Strict(BaseModel):
    """Unknown keys are errors everywhere in the spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- models -----------------------------------------------------------------------------------

Provider = Literal["builtin", "openai", "anthropic", "ollama"]


class ModelSpec(Strict):
    provider: Provider = Field(description="Adapter used to talk to this model.")
    model: str | None = Field(None, max_length=200, description="Upstream model id; defaults to the key.")
    api_base: HttpUrl | None = Field(None, description="Base URL of the provider's API.")
    api_key: SecretRef | None = None
    connect_timeout_seconds: PositiveSeconds = 5
    read_timeout_seconds: PositiveSeconds = 60
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
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)

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
    providers: dict[Name, ModelSpec] = Field(min_length=1)


# --- channels ---------------------------------------------------------------------------------


class Channel(Strict):
    enabled: bool = False
    model: Name | None = Field(None, description="Model for this channel; the default when unset.")


class WebChannel(Channel):
    enabled: bool = True
    cors_origins: list[HttpUrl] = Field(default_factory=list)


class WebSocketChannel(Channel):
    enabled: bool = True
    path: UrlPath = "/ws"
    heartbeat_seconds: PositiveSeconds = 30


class TelegramChannel(Channel):
    bot_token: SecretRef | None = None
    webhook_secret: SecretRef | None = None
    path: UrlPath = "/webhooks/telegram"
    allowed_users: list[str] = Field(default_factory=list)


class WeComChannel(Channel):
    corp_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]+$")
    agent_id: int | None = None
    token: SecretRef | None = None
    encoding_aes_key: SecretRef | None = None
    secret: SecretRef | None = None
    path: UrlPath = "/webhooks/wecom"


class WhatsAppChannel(Channel):
    phone_number_id: str | None = Field(None, pattern=r"^[0-9]+$")
    access_token: SecretRef | None = None
    verify_token: SecretRef | None = None
    app_secret: SecretRef | None = None
    path: UrlPath = "/webhooks/whatsapp"


class Channels(Strict):
    web: WebChannel = WebChannel()
    websocket: WebSocketChannel = WebSocketChannel()
    telegram: TelegramChannel = TelegramChannel()
    wecom: WeComChannel = WeComChannel()
    whatsapp: WhatsAppChannel = WhatsAppChannel()

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
    name: Name
    enabled: bool = True
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
    timeout_seconds: PositiveSeconds = 10
    config: dict[Name, str | int | float | bool] = Field(default_factory=dict)


# --- limits -----------------------------------------------------------------------------------


class RateLimit(Strict):
    requests_per_minute: int = Field(60, ge=1)
    burst: int = Field(20, ge=1)
    key: Literal["user", "ip"] = "user"


class Timeouts(Strict):
    connect_seconds: PositiveSeconds = 5
    read_seconds: PositiveSeconds = 60
    request_seconds: PositiveSeconds = 120
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
    queue_size: int = Field(1024, ge=0)


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
    timeouts: Timeouts = Timeouts()
    concurrency: Concurrency = Concurrency()
    max_message_chars: int = Field(16_000, ge=1)
    max_body_kilobytes: int = Field(256, ge=1, le=1_048_576)


# --- monitoring -------------------------------------------------------------------------------


class Metrics(Strict):
    enabled: bool = True
    path: UrlPath = "/metrics"
    allow_networks: list[IPv4Network | IPv6Network] = Field(default_factory=lambda: [IPv4Network("127.0.0.0/8")])


class Alerts(Strict):
    error_rate_percent: Percent = 5
    slow_request_seconds: PositiveSeconds = 2
    slow_request_percent: Percent = 10
    p99_latency_seconds: PositiveSeconds = 2
    model_failure_percent: Percent = 5
    disk_used_percent: Percent = 85
    memory_used_percent: Percent = 85
    for_minutes: int = Field(5, ge=0, le=1440)
    instance_down_minutes: int = Field(1, ge=0, le=1440)


class Receiver(Strict):
    name: Name
    kind: Literal["webhook", "email", "telegram"]
    url: HttpUrl | None = None
    email: str | None = Field(None, pattern=r"^[^@\s\"'{};]+@[A-Za-z0-9.-]+$")
    chat_id: int | None = None
    bot_token: SecretRef | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> Receiver:
        need = {"webhook": ("url",), "email": ("email",), "telegram": ("chat_id", "bot_token")}[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"receiver of kind '{self.kind}' needs: {', '.join(missing)}")
        return self


class ServiceToggle(Strict):
    enabled: bool = False
    port: Port


class Prometheus(ServiceToggle):
    port: Port = 9090
    scrape_interval_seconds: int = Field(15, ge=1, le=3600)
    retention_days: int = Field(15, ge=1)


class Alertmanager(ServiceToggle):
    port: Port = 9093
    receivers: list[Receiver] = Field(default_factory=list)


class Grafana(ServiceToggle):
    port: Port = 3000
    admin_password: SecretRef | None = None


class Elk(Strict):
    enabled: bool = False
    elasticsearch_hosts: list[HttpUrl] = Field(default_factory=lambda: [HttpUrl("http://127.0.0.1:9200")])
    index_prefix: Name = "assistant"


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    elk: Elk = Elk()


class Monitoring(Strict):
    metrics: Metrics = Metrics()
    alerts: Alerts = Alerts()
    prometheus: Prometheus = Prometheus()
    alertmanager: Alertmanager = Alertmanager()
    grafana: Grafana = Grafana()
    logging: Logging = Logging()


# --- security ---------------------------------------------------------------------------------


class Jwt(Strict):
    """Tokens from an identity provider: `sub` is the user, `scope` (space-separated) or `scopes` the
    scopes (chat, history, admin; chat and history when absent), `exp` is required."""

    enabled: bool = False
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
    enabled: bool = False
    certificate: SafePath | None = None
    key: SafePath | None = None
    hsts: bool = True

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
    enabled: bool = False
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
    enabled: bool = False
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
    enabled: bool = True


class Security(Strict):
    anonymous: Literal["loopback", "anywhere", "off"] = Field(
        "loopback",
        description="Who may chat without an API key or token, as the one anonymous user: clients on the host "
        "itself (loopback, the default), every client (anywhere: an explicit choice, flagged by plan), or nobody.",
    )
    jwt: Jwt = Jwt()
    edge_secret: SecretRef | None = Field(
        None,
        description="Shared by the edges and the engine-only hosts: nginx sends it with every request, and an "
        "engine-only host admits only its edges' addresses holding it. Required when a host has the engine role "
        "without the edge role.",
    )
    tls: Tls = Tls()
    allowed_users: list[str] = Field(default_factory=list, description="Empty: everyone may chat.")
    allowed_networks: list[IPv4Network | IPv6Network] = Field(
        default_factory=list, description="Source networks nginx admits; empty: all."
    )
    history_encryption: HistoryEncryption = HistoryEncryption()
    history_retention_days: int | None = Field(
        None,
        ge=1,
        le=36_500,
        description="Delete conversation history older than this many days (checked hourly and at start); "
        "unset keeps it forever.",
    )
    pii_masking: PiiMasking = PiiMasking()
    audit: Audit = Audit()


# --- deploy -----------------------------------------------------------------------------------

Role = Literal["engine", "edge", "monitoring", "logging"]


class Host(Strict):
    name: Name
    address: HostName = "127.0.0.1"
    connection: Literal["local", "ssh"] = "local"
    ssh_user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]*$")
    ssh_port: Port = 22
    ssh_config: SafePath | None = Field(
        None,
        description="An ssh_config(5) file for the connections to this host (ssh -F): key, known hosts, "
        "jump host...; relative to the spec. Unset: the controller user's own ssh configuration.",
    )
    roles: list[Role] = Field(default_factory=lambda: ["engine", "edge"])
    python: SafePath | None = Field(
        None, description="Interpreter on the host; unset on a local host means the one running assistantctl."
    )
    ha_priority: int | None = Field(None, ge=1, le=254)


class Ports(Strict):
    http: Port = 8080
    https: Port = 8443
    engine: Port = 8081


class HighAvailability(Strict):
    virtual_ip: IPv4Address
    interface: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    router_id: int = Field(51, ge=1, le=255)
    hosts: list[Name] = Field(min_length=2, max_length=2, description="Master first, then backup.")
    auth_password: SecretRef | None = None


class SharedState(Strict):
    history: Literal["sqlite", "postgres"] = "sqlite"
    postgres_dsn: SecretRef | None = None
    rate_limits: Literal["memory", "redis"] = Field(
        "memory",
        description="Where the limits' buckets live. memory: each node keeps its own (its workers share a "
        "SQLite file in the data dir); redis: one set for every node (needs redis_url).",
    )
    redis_url: SecretRef | None = None


class Deploy(Strict):
    root: SafePath = Field(".assistant", description="Where releases, data and logs live; relative to the spec.")
    server_name: ServerName = "localhost"
    ports: Ports = Ports()
    hosts: list[Host] = Field(default_factory=lambda: [Host(name="local")], min_length=1)
    ha: HighAvailability | None = None
    state: SharedState = SharedState()
    serial: int = Field(1, ge=1, description="Hosts updated at once during a rolling apply.")
    max_fail_percentage: int = Field(0, ge=0, le=100)
    overrides: SafePath = Field(
        "overrides",
        description="Folder of files merged over the rendered ones: overrides/<renderer>/<path> matches "
        "<renderer>/<path> (YAML/JSON deep-merge, INI key by key, nginx snippets in http.d/ and server.d/); "
        "relative to the spec. A missing folder means no overrides.",
    )


# --- the whole file ---------------------------------------------------------------------------


class Spec(Strict):
    """assistant.yaml: everything about one assistant deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="assistant.yaml")

    version: Literal[1] = 1
    name: Name = "assistant"
    models: Models
    channels: Channels = Channels()
    skills: list[Skill] = Field(default_factory=list)
    limits: Limits = Limits()
    monitoring: Monitoring = Monitoring()
    security: Security = Security()
    deploy: Deploy = Deploy()
