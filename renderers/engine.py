"""The engine's settings file, built as the engine's own settings model so it cannot drift."""

from __future__ import annotations

import json

from ..engine.settings import (
    AdapterCodeSettings,
    ApprovalSettings,
    BrowserToolSettings,
    ChannelSettings,
    EngineSettings,
    FetchToolSettings,
    GlobalRateLimitSettings,
    HistoryKeySettings,
    MachineToolSettings,
    McpServerSettings,
    ModelSettings,
    NotesToolSettings,
    RateLimitSettings,
    SearchToolSettings,
    SecuritySettings,
    SkillFolderSettings,
    SkillSettings,
    ToolPermissionSettings,
    ToolsSettings,
)
from ..schema.adapter_modules import adapter_code_digest
from ..schema.secrets import secret_refs
from ..schema.spec import Spec
from ..schema.spec.tools import MachineTool, McpHttpServer, McpStdioServer
from ..schema.types import SECRET_REF
from . import adapters
from .base import Files, Renderer, Target
from .prometheus import metrics_readers

SECRETS_FILE = "secrets.json"
# The engine only ever gets the secrets its own settings can name.
_ENGINE_SECRET_PREFIXES = ("models.", "channels.", "security.", "deploy.state.", "tools.mcp_servers.")
_CHANNEL_SECRETS = {
    "telegram": ("bot_token", "webhook_secret"),
    "wecom": ("token", "encoding_aes_key", "secret"),
    "whatsapp": ("access_token", "verify_token", "app_secret"),
}


def build_settings(target: Target) -> EngineSettings:
    spec = target.spec
    secrets = secret_refs(spec)
    limits = spec.limits
    return EngineSettings(
        name=spec.name,
        listen_host="127.0.0.1" if target.has_role("edge") else "0.0.0.0",
        listen_port=spec.deploy.ports.engine,
        workers=limits.concurrency.workers,
        data_dir=target.path("data"),
        log_dir=target.path("logs"),
        log_level=spec.monitoring.logging.level,
        log_format=spec.monitoring.logging.format,
        secrets_file=(f"{target.current}/engine/{SECRETS_FILE}" if any(map(_is_engine_secret, secrets)) else None),
        default_model=spec.models.default,
        fallback=list(spec.models.fallback),
        models=[_model(spec, name) for name in spec.models.providers],
        adapter_code=(
            AdapterCodeSettings(
                path=f"{target.current}/{adapters.FOLDER}", digest=adapter_code_digest(spec.loaded_adapter_modules)
            )
            if spec.loaded_adapter_modules
            else None
        ),
        channels=_channels(spec, secrets),
        skills=[
            SkillSettings(
                name=s.name,
                entrypoint=s.entrypoint,
                hooks=list(s.hooks),
                timeout_seconds=s.timeout_seconds,
                config=dict(s.config),
            )
            for s in spec.tools.skills
            if s.enabled
        ],
        tools=_tools(spec, secrets, target),
        skill_folders=[
            SkillFolderSettings(
                name=folder.name,
                path=f"{target.current}/skills/{folder.name}",
                digest=folder.digest,
                description=folder.description,
                command=folder.command,
                tool=folder.tool,
                config=folder.config,
                timeout_seconds=folder.timeout_seconds,
            )
            for folder in spec.loaded_skill_folders
        ],
        rate_limit=RateLimitSettings(**limits.rate_limit.model_dump()),
        global_rate_limit=(
            GlobalRateLimitSettings(**limits.global_rate_limit.model_dump()) if limits.global_rate_limit else None
        ),
        daily_tokens_per_user=limits.daily_tokens_per_user,
        request_timeout_seconds=limits.timeouts.request_seconds,
        header_timeout_seconds=limits.timeouts.header_seconds,
        body_timeout_seconds=limits.timeouts.body_seconds,
        max_in_flight=limits.concurrency.max_in_flight,
        queue_size=limits.concurrency.queue_size,
        max_message_chars=limits.max_message_chars,
        metrics_enabled=spec.monitoring.metrics.enabled,
        metrics_path=spec.monitoring.metrics.path,
        security=_security(spec, target, secrets),
        history_backend=spec.deploy.state.history,
        history_dsn_secret=_name_if_set(secrets, "deploy.state.postgres_dsn"),
        rate_limit_backend=spec.deploy.state.rate_limits,
        rate_limit_redis_url_secret=_name_if_set(secrets, "deploy.state.redis_url"),
    )


def _tools(spec: Spec, secrets: dict[str, str], target: Target) -> ToolsSettings:
    tools = spec.tools
    options = tools.settings
    return ToolsSettings(
        enabled=tools.active,
        permissions=[
            ToolPermissionSettings(tool=rule.tool, channels=list(rule.channels), users=list(rule.users))
            for rule in tools.permissions
        ],
        max_steps=tools.max_steps,
        step_timeout_seconds=tools.step_timeout_seconds,
        output_limit_bytes=tools.output_limit_bytes,
        fetch=FetchToolSettings(
            allowed_domains=list(options.fetch.allowed_domains),
            allowed_networks=[str(network) for network in options.fetch.allowed_networks],
            max_bytes=options.fetch.max_bytes,
            timeout_seconds=options.fetch.timeout_seconds,
            max_redirects=options.fetch.max_redirects,
        ),
        search=SearchToolSettings(
            url=str(options.search.url).rstrip("/") if options.search.url else None,
            max_results=options.search.max_results,
            timeout_seconds=options.search.timeout_seconds,
        ),
        notes=NotesToolSettings(**options.notes.model_dump()),
        machine=_machine(options.machine, target),
        browser=BrowserToolSettings(
            **options.browser.model_dump(exclude={"allowed_networks"}),
            allowed_networks=[str(network) for network in options.browser.allowed_networks],
        ),
        mcp_servers=[_mcp_server(name, server, secrets) for name, server in tools.mcp_servers.items()],
        approval=ApprovalSettings(**tools.approval.model_dump()),
    )


def workspaces_dir(target: Target) -> str:
    """Where the machine tools' per-user workspaces live on this target (the playbook makes it 0711)."""
    return target.spec.tools.settings.machine.workspaces_dir or target.path("workspaces")


def _machine(machine: MachineTool, target: Target) -> MachineToolSettings:
    """The machine tools' sandbox limits; the workspaces sit under the deploy root, beside (never in)
    the engine's 0700 data folder, so each sandbox's uid can pass through to its own workspace."""
    return MachineToolSettings(
        workspaces_dir=workspaces_dir(target),
        workspace_quota_bytes=machine.workspace_quota_mb << 20,
        wall_seconds=machine.wall_seconds,
        cpu_seconds=machine.cpu_seconds,
        memory_bytes=machine.memory_mb << 20,
        processes=machine.processes,
        file_bytes=machine.file_mb << 20,
        output_bytes=machine.output_kb << 10,
        shell_commands=list(machine.shell_commands),
    )


def _mcp_server(name: str, server: McpStdioServer | McpHttpServer, secrets: dict[str, str]) -> McpServerSettings:
    """Literal env values and headers are written; secret ones are named by their place in the spec
    (tools.mcp_servers.<name>.env.<VAR>, ...headers.<Header>) and go to the secrets file."""

    def split(values: dict[str, str], field: str) -> tuple[dict[str, str], dict[str, str]]:
        named = {key: f"tools.mcp_servers.{name}.{field}.{key}" for key in values}
        return (
            {key: value for key, value in values.items() if named[key] not in secrets},
            {key: secret for key, secret in named.items() if secret in secrets},
        )

    common = {
        "name": name,
        "transport": server.transport,
        "allow_tools": list(server.allow_tools),
        "timeout_seconds": server.timeout_seconds,
        "connect_timeout_seconds": server.connect_timeout_seconds,
    }
    if isinstance(server, McpStdioServer):
        env, env_secrets = split(server.env, "env")
        return McpServerSettings(
            **common, command=server.command, args=list(server.args), env=env, env_secrets=env_secrets
        )
    headers, header_secrets = split(server.headers, "headers")
    return McpServerSettings(**common, url=str(server.url), headers=headers, header_secrets=header_secrets)


def _model(spec: Spec, name: str) -> ModelSettings:
    m = spec.models.providers[name]
    api_base = str(m.api_base).rstrip("/") if m.api_base else None
    return ModelSettings(
        name=name,
        provider=m.provider,
        model=m.model or name,
        api_base=api_base,
        api_key_secret=f"models.providers.{name}.api_key" if m.api_key else None,
        connect_timeout_seconds=m.connect_timeout_seconds,
        read_timeout_seconds=m.read_timeout_seconds,
        max_concurrency=m.max_concurrency,
        requests_per_minute=m.requests_per_minute,
        tokens_per_minute=m.tokens_per_minute,
        max_tokens=m.max_tokens,
        temperature=m.temperature,
        input=list(m.input),
        adapter_class=m.class_path,
        **_params(name, m.params or {}),
    )


def _params(name: str, params: dict) -> dict:
    """A custom adapter's params: plain values in the settings, secret ones named by their place
    in the spec (their values go to the secrets file, like every secret)."""
    secret = {key for key, value in params.items() if isinstance(value, str) and SECRET_REF.match(value)}
    return {
        "params": {key: value for key, value in params.items() if key not in secret},
        "param_secrets": {key: f"models.providers.{name}.params.{key}" for key in sorted(secret)},
    }


def _channels(spec: Spec, secrets: dict[str, str]) -> list[ChannelSettings]:
    result = []
    for name in type(spec.channels).model_fields:
        channel = getattr(spec.channels, name)
        if not channel.enabled:
            continue
        options: dict[str, str | int] = {}
        if name == "wecom":
            options = {"corp_id": channel.corp_id, **({"agent_id": channel.agent_id} if channel.agent_id else {})}
        if name == "whatsapp":
            options = {"phone_number_id": channel.phone_number_id}
        if name == "telegram" and channel.mode == "polling":  # webhook, the default, is left unsaid
            options = {"mode": "polling"}
        result.append(
            ChannelSettings(
                name=name,
                model=channel.model,
                path=getattr(channel, "path", None),
                heartbeat_seconds=getattr(channel, "heartbeat_seconds", None),
                allowed_users=list(getattr(channel, "allowed_users", [])),
                secrets={
                    field: f"channels.{name}.{field}"
                    for field in _CHANNEL_SECRETS.get(name, ())
                    if f"channels.{name}.{field}" in secrets
                },
                options=options,
                cors_origins=list(getattr(channel, "cors_origins", [])),
                api_base=str(channel.api_base).rstrip("/") if getattr(channel, "api_base", None) else None,
            )
        )
    return result


def _security(spec: Spec, target: Target, secrets: dict[str, str]) -> SecuritySettings:
    security = spec.security
    jwt_on = security.jwt.enabled
    guarded = not target.has_role("edge")  # an engine-only host listens beyond loopback: edges only
    return SecuritySettings(
        anonymous=security.anonymous,
        jwt_secret=_name_if_set(secrets, "security.jwt.secret") if jwt_on else None,
        jwt_public_key_secret=_name_if_set(secrets, "security.jwt.public_key") if jwt_on else None,
        jwt_jwks_secret=_name_if_set(secrets, "security.jwt.jwks") if jwt_on else None,
        jwt_algorithm=security.jwt.algorithm,
        jwt_issuer=security.jwt.issuer,
        jwt_audience=security.jwt.audience,
        jwt_max_lifetime_seconds=security.jwt.max_lifetime_seconds,
        jwt_leeway_seconds=security.jwt.leeway_seconds,
        metrics_allow_networks=metrics_readers(spec),  # the spec's networks and the monitoring hosts
        edge_addresses=[h.address for h in spec.deploy.hosts if "edge" in h.roles] if guarded else [],
        edge_secret=_name_if_set(secrets, "security.edge_secret") if guarded else None,
        allowed_users=list(security.allowed_users),
        history_key_secret=(
            _name_if_set(secrets, "security.history_encryption.key") if security.history_encryption.enabled else None
        ),
        history_keys=_history_keys(spec, secrets),
        history_retention_days=security.history_retention_days,
        pii_masking=list(security.pii_masking.kinds) if security.pii_masking.enabled else [],
        pii_before_model=security.pii_masking.enabled and security.pii_masking.before_model,
        audit_log=target.path("logs", "audit.log") if security.audit.enabled else None,
    )


def _history_keys(spec: Spec, secrets: dict[str, str]) -> list[HistoryKeySettings]:
    """The keyring, current key first; each key's secret is named by its place in the spec."""
    encryption = spec.security.history_encryption
    if not encryption.enabled:
        return []
    return [
        HistoryKeySettings(id=key.id, secret=f"security.history_encryption.keys.{index}.key")
        for index, key in enumerate(encryption.keys)
    ]


def _is_engine_secret(name: str) -> bool:
    return name.startswith(_ENGINE_SECRET_PREFIXES)


def _name_if_set(secrets: dict[str, str], name: str) -> str | None:
    return name if name in secrets else None


def render(target: Target) -> Files:
    return {"settings.json": build_settings(target).to_json()}


def secret_files(target: Target, values: dict[str, str]) -> Files:
    mine = {name: value for name, value in values.items() if _is_engine_secret(name)}
    if not mine:
        return {}
    return {SECRETS_FILE: json.dumps(mine, indent=2, sort_keys=True) + "\n"}


RENDERER = Renderer(
    name="engine",
    service="engine",
    render=render,
    applies=lambda t: t.has_role("engine"),
    # The engine's own settings model is the validator: the staged file must load in it.
    check="{python} -c 'import sys; from assistantctl.engine.settings import load_settings; "
    "load_settings(sys.argv[1])' {dir}/settings.json",
    secret_files=secret_files,
)
