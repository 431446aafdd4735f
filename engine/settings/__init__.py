"""The engine's settings file: the one contract between the compiler and the runtime.

The compiler builds an `EngineSettings` and writes it as JSON; the engine reads nothing else.
Secret values are not in this file: fields ending in `_secret` name an entry of the separate
mode-0600 secrets file (`secrets_file`), written at apply time. The tools' and skills' settings
are in `tools.py`; every name is importable from here.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, JsonValue, StringConstraints, model_validator

from .base import SettingsModel
from .tools import (
    BUILTIN_SKILLS,
    BUILTIN_TOOLS,
    DEFAULT_SHELL_COMMANDS,
    MCP_SERVER_NAME_PATTERN,
    SAFE_TOOLS,
    SKILL_NAME_PATTERN,
    ApprovalSettings,
    BrowserToolSettings,
    FetchToolSettings,
    MachineToolSettings,
    McpServerSettings,
    NotesToolSettings,
    SearchToolSettings,
    SkillFolderSettings,
    SkillSettings,
    ToolPermissionSettings,
    ToolsSettings,
)

# A custom model adapter's class: `package.module:ClassName`, or `package.module.ClassName`.
CLASS_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*[.:][A-Za-z_][A-Za-z0-9_]*$"


def split_class_path(path: str) -> tuple[str, str]:
    """(module, class name) of a class path in either form."""
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    return module, name


def top_module(path: str) -> str:
    """The top-level module or package a class path starts from (`pkg` of `pkg.mod:Class`)."""
    return split_class_path(path)[0].split(".")[0]


def adapter_class_problems(cls: object) -> list[str]:
    """What keeps `cls` from being a custom model adapter (empty: nothing). The contract, checked
    by `assistantctl validate` and again by the engine when it builds the adapter: a class, built
    as `cls(params)`, with `async def chat(messages, opts) -> Reply` and an async generator
    `stream(messages, opts)` yielding lists of Chunk; an optional `Params` pydantic model that
    `params` must fit (the instance is then what the constructor gets)."""
    if not inspect.isclass(cls):
        return [f"is a {type(cls).__name__}, not a class"]
    problems = []
    for method, check, kind in (
        ("chat", inspect.iscoroutinefunction, "a coroutine function (async def)"),
        ("stream", inspect.isasyncgenfunction, "an async generator (async def with yield)"),
    ):
        found = getattr(cls, method, None)
        if found is None:
            problems.append(f"missing method {method}")
        elif not check(found):
            problems.append(f"{method} must be {kind}")
    params = getattr(cls, "Params", None)
    if params is not None and not (inspect.isclass(params) and issubclass(params, BaseModel)):
        problems.append("Params must be a pydantic model (a BaseModel subclass)")
    try:
        inspect.signature(cls).bind(object())
    except (TypeError, ValueError) as exc:
        problems.append(f"cannot be built as {cls.__name__}(params): {exc}")
    return problems


class ModelSettings(SettingsModel):
    name: str
    provider: Literal["builtin", "openai", "anthropic", "ollama", "custom"]
    model: str
    api_base: str | None = None
    api_key_secret: str | None = None
    connect_timeout_seconds: float = 5
    read_timeout_seconds: float = 60
    max_concurrency: int = 64
    # Quotas for this model across the whole deployment (engine/limits/policy.py); None: no quota.
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    # What the model reads besides text: with "image", a chat platform's photos are given to it
    # (engine/channels/telegram_media.py); without, they get a polite refusal.
    input: list[Literal["text", "image"]] = Field(default_factory=lambda: ["text"])
    # provider "custom" (engine/models/adapters/custom.py): the class the engine imports, as
    # `module:Class`, built with `params` plus the params whose values are secrets (param name ->
    # entry of the secrets file).
    adapter_class: str | None = Field(None, pattern=CLASS_PATH_PATTERN)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    param_secrets: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _class_for_custom(self) -> ModelSettings:
        if (self.provider == "custom") != (self.adapter_class is not None):
            raise ValueError("adapter_class is set for provider 'custom' and only for it")
        return self


# A browser origin exactly as browsers send it in `Origin` (scheme, lower-case host, port unless the
# default; no path, no user, no trailing slash), or `*` for any. Nothing else can match, and nothing
# else can carry text that means something to another parser.
CORS_ORIGIN_PATTERN = (
    r"^(\*|https?://([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]{2,45}\])"
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?)$"
)
CorsOrigin = Annotated[str, StringConstraints(pattern=CORS_ORIGIN_PATTERN)]


class ChannelSettings(SettingsModel):
    name: Literal["web", "websocket", "telegram", "wecom", "whatsapp"]
    model: str | None = None
    path: str | None = None
    heartbeat_seconds: float | None = None
    allowed_users: list[str] = Field(default_factory=list)
    # Names of entries in the secrets file, keyed by what the channel uses them for.
    secrets: dict[str, str] = Field(default_factory=dict)
    options: dict[str, str | int] = Field(default_factory=dict)
    # The platform API replies are sent to (webhook channels); None: the platform's real one.
    api_base: str | None = None
    # web only: browser origins whose pages may call the API (engine/cors.py); empty: none.
    cors_origins: list[CorsOrigin] = Field(default_factory=list)


# The Telegram update types the engine answers: what apply registers with setWebhook and what the
# poller asks getUpdates for (engine/channels/telegram.py).
TELEGRAM_ALLOWED_UPDATES = ("message",)


class AdapterCodeSettings(SettingsModel):
    """Custom adapters' modules shipped with the release (engine/models/adapters/custom.py)."""

    path: str  # put first on each worker's import path, e.g. <root>/current/adapters
    digest: str  # sha256 over the shipped files: changed code changes settings.json


class RateLimitSettings(SettingsModel):
    requests_per_minute: int
    burst: int
    key: Literal["user", "ip"]


class GlobalRateLimitSettings(SettingsModel):
    """Requests per minute for the whole deployment, every user together."""

    requests_per_minute: int = Field(ge=1)
    burst: int = Field(ge=1)


class HistoryKeySettings(SettingsModel):
    """One key of the history keyring: an id stored beside each record it seals, and the name of
    the secrets-file entry holding the key (a Fernet key, or any secret: it is stretched to one)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    secret: str


class SecuritySettings(SettingsModel):
    # Who may call without credentials: clients on the host itself (the default), anyone, or nobody.
    anonymous: Literal["loopback", "anywhere", "off"] = "loopback"
    # JWT: one of the three key sources names a secret (HS*: the shared secret; RS256/ES256: a PEM
    # public key or a JWKS document).
    jwt_secret: str | None = None
    jwt_public_key_secret: str | None = None
    jwt_jwks_secret: str | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_max_lifetime_seconds: int = Field(86_400, ge=1)
    jwt_leeway_seconds: int = Field(30, ge=0)
    # Clients that read the metrics without credentials (admins may from anywhere).
    metrics_allow_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # An engine listening beyond loopback admits only these edge addresses (and loopback), and only
    # with the shared secret (a secret name) in the X-Assistant-Edge header.
    edge_addresses: list[str] = Field(default_factory=list)
    edge_secret: str | None = None
    # Networks of proxies that are not edges (the Kubernetes ingress controller's pods): their
    # X-Forwarded-For is believed too, its rightmost address outside them being the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    allowed_users: list[str] = Field(default_factory=list)
    history_key_secret: str | None = None
    # The history keyring, current key first; older keys only read (and are re-sealed away in the
    # background). history_key_secret is the older one-key form; set one or the other.
    history_keys: list[HistoryKeySettings] = Field(default_factory=list)
    # Messages older than this are deleted (hourly and at start); None keeps history forever.
    history_retention_days: float | None = Field(None, gt=0)
    pii_masking: list[str] = Field(default_factory=list)
    # Hide the pii_masking kinds from the upstream model behind placeholders restored in the reply.
    pii_before_model: bool = False
    audit_log: str | None = None

    @property
    def jwt_configured(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key_secret or self.jwt_jwks_secret)

    @model_validator(mode="after")
    def _one_history_keyring(self) -> SecuritySettings:
        if self.history_key_secret and self.history_keys:
            raise ValueError("set history_keys or history_key_secret, not both")
        ids = [key.id for key in self.history_keys]
        if len(ids) != len(set(ids)):
            raise ValueError("history_keys: every key needs an id of its own")
        return self


class EngineSettings(SettingsModel):
    name: str
    listen_host: str
    listen_port: int
    workers: int
    data_dir: str
    log_dir: str
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    secrets_file: str | None = None
    default_model: str
    fallback: list[str] = Field(default_factory=list)
    models: list[ModelSettings]
    # Imported by each worker when it builds its models: new adapter code needs new workers (RESTART_ONLY).
    adapter_code: AdapterCodeSettings | None = None
    channels: list[ChannelSettings] = Field(default_factory=list)
    skills: list[SkillSettings] = Field(default_factory=list)
    # Loaded by each worker at start: new handler code needs new worker processes (RESTART_ONLY).
    skill_folders: list[SkillFolderSettings] = Field(default_factory=list)
    tools: ToolsSettings = ToolsSettings()
    rate_limit: RateLimitSettings
    global_rate_limit: GlobalRateLimitSettings | None = None
    # Tokens (input + output) a user may spend per UTC day; None: no budget.
    daily_tokens_per_user: int | None = Field(None, ge=1)
    request_timeout_seconds: float = 120
    # A request's headers must arrive within header_timeout_seconds of its first byte (or of the
    # connection opening), its body within body_timeout_seconds of the headers (engine/http_protocol.py).
    header_timeout_seconds: float = Field(10, gt=0)
    body_timeout_seconds: float = Field(30, gt=0)
    max_in_flight: int = 256
    queue_size: int = 1024
    max_message_chars: int = 16_000
    metrics_enabled: bool = True
    metrics_path: str = "/metrics"
    security: SecuritySettings = SecuritySettings()
    # Shared state for several engine nodes. The DSN and URL are secret names (they carry passwords).
    history_backend: Literal["sqlite", "postgres"] = "sqlite"
    history_dsn_secret: str | None = None
    rate_limit_backend: Literal["memory", "redis"] = "memory"
    rate_limit_redis_url_secret: str | None = None
    # Resilience knobs of the router; the defaults suit a cloud API. Optional so that a settings
    # file rendered without them stays valid.
    retries: int = Field(2, ge=0, le=10)
    retry_backoff_seconds: float = Field(0.1, ge=0)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(30, gt=0)
    history_context_messages: int = Field(20, ge=0)

    @model_validator(mode="after")
    def _shared_state_has_its_secret(self) -> EngineSettings:
        if self.history_backend == "postgres" and not self.history_dsn_secret:
            raise ValueError("history_backend 'postgres' needs history_dsn_secret")
        if self.rate_limit_backend == "redis" and not self.rate_limit_redis_url_secret:
            raise ValueError("rate_limit_backend 'redis' needs rate_limit_redis_url_secret")
        return self

    def model(self, name: str) -> ModelSettings:
        return next(m for m in self.models if m.name == name)

    def to_json(self) -> str:
        """Stable text: the renderer writes this, the engine reads it back with `load_settings`."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def load_settings(path: str | Path) -> EngineSettings:
    return EngineSettings.model_validate_json(Path(path).read_text(encoding="utf-8"))


def load_secrets(settings: EngineSettings) -> dict[str, str]:
    """The secrets file (a JSON object of name → value), or nothing when the spec has no secrets."""
    if not settings.secrets_file or not Path(settings.secrets_file).exists():
        return {}
    return json.loads(Path(settings.secrets_file).read_text(encoding="utf-8"))


# The environment variable naming the settings file to the workers (set by `python -m ...engine`).
SETTINGS_ENV = "ASSISTANT_ENGINE_SETTINGS"
# In data_dir: the settings and secrets sha256 that every worker of the engine runs, written by the
# engine's parent once all of them do (engine/workers.py); /health shows it to loopback peers.
WORKERS_STATE_FILE = "engine-workers.json"

# What a worker builds once, at start (sockets, logging, storage, routes, middleware, the HTTP
# protocol, the masker, the history keyring): a change to one of these needs new worker processes.
RESTART_ONLY = (
    "listen_host",
    "listen_port",
    "workers",
    "data_dir",
    "log_dir",
    "log_level",
    "log_format",
    "history_backend",
    "history_dsn_secret",
    "rate_limit_backend",
    "rate_limit_redis_url_secret",
    "secrets_file",
    "channels",
    "metrics_enabled",
    "metrics_path",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "request_timeout_seconds",
    "daily_tokens_per_user",
    "security.edge_addresses",
    "security.edge_secret",
    "security.trusted_proxies",
    "security.pii_masking",
    "security.audit_log",
    "security.history_key_secret",
    "security.history_keys",
    "security.history_retention_days",
    "tools.mcp_servers",
    "skill_folders",
    "adapter_code",
)


def restart_fields(old: EngineSettings, new: EngineSettings) -> list[str]:
    """The RESTART_ONLY fields that differ: the engine's parent rolls its workers for these."""
    return [f for f in RESTART_ONLY if _field(old, f) != _field(new, f)]


def _field(settings: EngineSettings, dotted: str) -> object:
    value: object = settings
    for name in dotted.split("."):
        value = getattr(value, name)
    return value


__all__ = [
    "AdapterCodeSettings",
    "ApprovalSettings",
    "BUILTIN_SKILLS",
    "BUILTIN_TOOLS",
    "BrowserToolSettings",
    "CLASS_PATH_PATTERN",
    "CORS_ORIGIN_PATTERN",
    "ChannelSettings",
    "CorsOrigin",
    "DEFAULT_SHELL_COMMANDS",
    "EngineSettings",
    "FetchToolSettings",
    "GlobalRateLimitSettings",
    "HistoryKeySettings",
    "MCP_SERVER_NAME_PATTERN",
    "MachineToolSettings",
    "McpServerSettings",
    "ModelSettings",
    "NotesToolSettings",
    "RESTART_ONLY",
    "RateLimitSettings",
    "SAFE_TOOLS",
    "SETTINGS_ENV",
    "SKILL_NAME_PATTERN",
    "SearchToolSettings",
    "SecuritySettings",
    "SkillFolderSettings",
    "SkillSettings",
    "TELEGRAM_ALLOWED_UPDATES",
    "ToolPermissionSettings",
    "ToolsSettings",
    "WORKERS_STATE_FILE",
    "adapter_class_problems",
    "load_secrets",
    "load_settings",
    "restart_fields",
    "split_class_path",
    "top_module",
]
