"""`tools:` what the assistant can use beyond the model itself."""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, HttpUrl, StringConstraints, model_validator

from ...engine.settings import BUILTIN_TOOLS, DEFAULT_SHELL_COMMANDS, MCP_SERVER_NAME_PATTERN
from ..types import SECRET_REF, IPNetwork, PositiveSeconds, SafePath
from .base import Strict
from .skills import Skill

# A shipped tool's name (engine/settings/tools.py BUILTIN_TOOLS): a typo is an error with a did-you-mean.
ToolName = Literal[tuple(BUILTIN_TOOLS)]  # type: ignore[valid-type]
# In `enabled`, `safe` stands for every tool of the safe risk class.
ToolChoice = Literal[("safe", *BUILTIN_TOOLS)]  # type: ignore[valid-type]
ChannelName = Literal["web", "websocket", "telegram", "wecom", "whatsapp"]


class FetchTool(Strict):
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="Domains http_fetch and web_page_text may read (subdomains included); empty: any public host.",
    )
    allowed_networks: list[IPNetwork] = Field(
        default_factory=list,
        description="Private, loopback or reserved networks they may reach all the same (CIDR); "
        "everything but public addresses is refused by default.",
    )
    max_bytes: int = Field(1_000_000, ge=1, le=100_000_000, description="Bytes of a response read at most.")
    timeout_seconds: PositiveSeconds = Field(10, description="Seconds one fetch may take, redirects included.")
    max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed (each one checked again).")


class SearchTool(Strict):
    url: HttpUrl | None = Field(None, description="Base URL of a SearXNG instance with the JSON format on.")
    max_results: int = Field(5, ge=1, le=50, description="Results given to the model at most.")
    timeout_seconds: PositiveSeconds = Field(10, description="Seconds one search may take.")


class NotesTool(Strict):
    max_notes_per_user: int = Field(500, ge=1, description="Notes one user may keep.")
    max_note_chars: int = Field(4000, ge=1, le=20_000, description="Characters in one note at most.")


class BrowserTool(Strict):
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="Domains the browser may load anything from (subdomains included): pages, scripts, images, "
        "redirects, each request checked; empty, the default: none.",
    )
    allowed_networks: list[IPNetwork] = Field(
        default_factory=list,
        description="Private, loopback or reserved networks the browser may reach all the same (CIDR); "
        "everything but public addresses is refused by default.",
    )
    timeout_seconds: PositiveSeconds = Field(15, description="Seconds one action (open, click, screenshot) may take.")
    idle_seconds: PositiveSeconds = Field(300, description="Seconds a user's browser session lives unused.")
    max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed (each one checked again).")
    viewport_width: int = Field(1280, ge=200, le=4096, description="The page's width in pixels.")
    viewport_height: int = Field(800, ge=200, le=4096, description="The page's height in pixels.")


# A program the shell tool may run, by name (it runs as /usr/bin/<name> in the sandbox).
ProgramName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]


class MachineTool(Strict):
    workspaces_dir: SafePath | None = Field(
        None,
        description="An absolute folder for the per-user workspaces; unset: <deploy root>/workspaces. Not inside "
        "the engine's data folder: each sandbox's uid must pass through every parent.",
    )
    workspace_quota_mb: int = Field(256, ge=1, le=1_000_000, description="Megabytes one user's workspace may hold.")
    wall_seconds: PositiveSeconds = Field(
        15, description="Seconds one sandboxed run may take (it ends before step_timeout_seconds)."
    )
    cpu_seconds: int = Field(10, ge=1, le=3600, description="CPU seconds per process of a run.")
    memory_mb: int = Field(1024, ge=64, le=1_000_000, description="Megabytes of address space per process.")
    processes: int = Field(64, ge=4, le=4096, description="Processes and threads a run may have at once.")
    file_mb: int = Field(64, ge=1, le=1_000_000, description="Megabytes of the largest file a run may write.")
    output_kb: int = Field(1024, ge=1, le=1_000_000, description="Kilobytes of output per stream; more ends the run.")
    shell_commands: list[ProgramName] = Field(
        default_factory=lambda: list(DEFAULT_SHELL_COMMANDS),
        description="Programs the shell tool may run, by name (/usr/bin/<name>); it has no shell, so pipes, ; "
        "and $(...) are plain arguments. A shell or an interpreter here gives the model that program, "
        "still inside the sandbox.",
    )

    @model_validator(mode="after")
    def _absolute_workspaces(self) -> MachineTool:
        if self.workspaces_dir is not None and not self.workspaces_dir.startswith("/"):
            raise ValueError("workspaces_dir must be an absolute path")
        return self


class ToolSettings(Strict):
    fetch: FetchTool = Field(default_factory=FetchTool, description="http_fetch and web_page_text.")
    search: SearchTool = Field(default_factory=SearchTool, description="web_search.")
    notes: NotesTool = Field(default_factory=NotesTool, description="notes_save, notes_list, notes_delete.")
    machine: MachineTool = Field(
        default_factory=MachineTool,
        description="workspace_*, python and shell: each call in a bubblewrap sandbox over the user's workspace.",
    )
    browser: BrowserTool = Field(
        default_factory=BrowserTool, description="browser: Chromium in a sandbox, on the allowed domains only."
    )


class Approval(Strict):
    machine: Literal["never", "tainted", "always"] = Field(
        "tainted",
        description="When a machine tool waits for the user's yes in their channel (the websocket, telegram, "
        "whatsapp, wecom): 'tainted', the default, once the request has seen text from the network (a fetched "
        "page, search results, an MCP server's answer); 'always' for every call; 'never'. A channel that cannot "
        "ask (the REST API, its SSE stream) refuses such a call with a tool error.",
    )
    timeout_seconds: PositiveSeconds = Field(
        60,
        description="Seconds the engine waits for the answer; no answer counts as a no. The wait is part of the "
        "request's request_timeout_seconds, so keep it well below that.",
    )


# A tool a permission rule may name: a shipped one, an MCP server's (as the model sees it,
# mcp_<server>__<tool>) or a skill folder's (skill_<name>); the last two are checked against
# tools.mcp_servers and tools.skill_folders by `Tools`.
_SOURCE_TOOL = re.compile(r"^(mcp_[a-z][a-z0-9_-]{0,23}__[A-Za-z0-9_-]{1,64}|skill_[a-z][a-z0-9_]{0,39})$")


def _a_tool(name: str) -> str:
    if name in BUILTIN_TOOLS or _SOURCE_TOOL.match(name):
        return name
    close = difflib.get_close_matches(name, list(BUILTIN_TOOLS), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"'{name}' is no tool: name a shipped tool, mcp_<server>__<tool> or skill_<name>{hint}")


PermittedTool = Annotated[str, StringConstraints(max_length=128), AfterValidator(_a_tool)]


class ToolPermission(Strict):
    tool: PermittedTool = Field(
        description="The tool this rule restricts: a shipped tool, an MCP server's as the model sees it "
        "(mcp_<server>__<tool>) or a skill folder's (skill_<name>)."
    )
    channels: list[ChannelName] = Field(default_factory=list, description="Channels it may be used on; empty: all.")
    users: list[str] = Field(default_factory=list, description="Users who may use it; empty: everyone.")


def _no_double_underscore(name: str) -> str:
    if "__" in name:
        raise ValueError("an MCP server's name has no '__' (it separates server and tool in the tool names)")
    return name


# Its tools reach the model as mcp_<server>__<tool>: short, and no "__" of its own.
McpServerName = Annotated[
    str, StringConstraints(pattern=MCP_SERVER_NAME_PATTERN), AfterValidator(_no_double_underscore)
]
# A tool name as MCP servers spell them, or "*" for all of a server's tools.
McpToolName = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9_./-]{1,128})$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]
# One line of text: a value, or a secret reference (${env:NAME} or ${file:/path}).
McpValue = Annotated[str, StringConstraints(pattern=r"^[^\x00\r\n]*$", max_length=4096)]
# Names of variables and headers that carry credentials: their value must be a secret reference.
_SENSITIVE = re.compile(r"auth|token|key|secret|passw|cookie|credential|session", re.IGNORECASE)


def _clear_credentials(values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if _SENSITIVE.search(name) and not SECRET_REF.match(value)]


class McpServerBase(Strict):
    allow_tools: list[McpToolName] = Field(
        default_factory=list,
        description="The server's tools the model may call, by the server's own names; ['*'] allows every tool "
        "the server lists (now and after its updates); empty, the default, allows none. They reach the model as "
        "mcp_<server>__<tool>, risk class network, their answers marked as text from elsewhere.",
    )
    timeout_seconds: PositiveSeconds = Field(
        30, description="Seconds one call may take, waiting for a reconnection included (step_timeout_seconds caps it)."
    )
    connect_timeout_seconds: PositiveSeconds = Field(
        10, description="Seconds a connection may take: the process start or HTTP, the handshake, the tool listing."
    )


class McpStdioServer(McpServerBase):
    """A server each engine worker starts as a subprocess and speaks to over its stdin and stdout."""

    transport: Literal["stdio"] = Field(description="stdio: the engine starts the server itself.")
    command: SafePath = Field(description="The server's executable: a path, or a name found on the engine's PATH.")
    args: list[McpValue] = Field(default_factory=list, description="Its arguments; secrets go through env, never here.")
    env: dict[EnvName, McpValue] = Field(
        default_factory=dict,
        description="Environment variables on top of a minimal environment (HOME, PATH, USER...). A value may be a "
        "secret reference, and must be one when the name looks like a credential (TOKEN, KEY, SECRET...).",
    )

    @model_validator(mode="after")
    def _secrets_are_references(self) -> McpStdioServer:
        if any(SECRET_REF.match(arg) for arg in self.args):
            raise ValueError("args would show a secret in the process list: pass secrets through env")
        clear = _clear_credentials(self.env)
        if clear:
            raise ValueError(
                f"env.{clear[0]} looks like a credential: write a secret reference (${{env:NAME}} or "
                "${file:/path}), not the value"
            )
        return self


class McpHttpServer(McpServerBase):
    """A server that runs on its own and answers MCP's streamable HTTP transport at one URL."""

    transport: Literal["http"] = Field(description="http: streamable HTTP to a running server.")
    url: HttpUrl = Field(description="The server's MCP endpoint, e.g. https://mcp.example.org/mcp.")
    headers: dict[HeaderName, McpValue] = Field(
        default_factory=dict,
        description="Headers sent with every request. A value may be a secret reference, and must be one when the "
        "name looks like a credential (Authorization, X-Api-Key...); such headers travel over https only, "
        "or plain http to a loopback address.",
    )

    @model_validator(mode="after")
    def _secrets_are_references_and_travel_safely(self) -> McpHttpServer:
        if self.url.username or self.url.password:
            raise ValueError("no credentials in the URL: put them in a header with a secret reference")
        clear = _clear_credentials(self.headers)
        if clear:
            raise ValueError(
                f"header {clear[0]} looks like a credential: write a secret reference (${{env:NAME}} or "
                "${file:/path}), not the value"
            )
        secret = [name for name, value in self.headers.items() if SECRET_REF.match(value)]
        if secret and self.url.scheme != "https" and not _loopback(self.url.host or ""):
            raise ValueError(f"header {secret[0]} is a secret: use https, or plain http to a loopback address only")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


McpServer = Annotated[McpStdioServer | McpHttpServer, Field(discriminator="transport")]


class Tools(Strict):
    """What the assistant can use beyond the model, in one section: its skills (hooks run before the
    model and on its reply) and the tools the model may call."""

    skills: list[Skill] = Field(
        default_factory=list, description="Hooks run before the model and on its reply, in order; none by default."
    )
    enabled: list[ToolChoice] = Field(
        default_factory=lambda: ["safe"],
        description="Tools the model may call; 'safe' stands for every safe tool (the default). Network tools "
        "(http_fetch, web_page_text, web_search) are on only when named, and so are machine tools (workspace_*, "
        "python, shell), which `validate` refuses when security.anonymous is 'anywhere'.",
    )
    disabled: list[ToolName] = Field(default_factory=list, description="Tools kept off even when 'enabled' has them.")
    settings: ToolSettings = Field(default_factory=ToolSettings, description="Options of the tools that have some.")
    permissions: list[ToolPermission] = Field(
        default_factory=list,
        description="Who may use a tool: a tool without a rule is open to every user on every channel.",
    )
    approval: Approval = Field(default_factory=Approval, description="When machine tools ask the user before they run.")
    max_steps: int = Field(8, ge=1, le=50, description="Tool calls the model may make for one request.")
    step_timeout_seconds: PositiveSeconds = Field(20, description="Seconds one tool call may take.")
    output_limit_bytes: int = Field(
        16_000, ge=256, le=1_000_000, description="Bytes of one tool's answer at most; more is an error."
    )
    skill_folders: list[SafePath] = Field(
        default_factory=list,
        description="Skill folders shipped with the engine, each <name>/{handler.py, config.yaml} (a relative path "
        "sits next to the spec). handler.py defines one BaseSkill class (assistantctl.engine.skills.folders); "
        "config.yaml gives its description, an optional command (/name) that runs it without the model, whether "
        "the model may call it as the tool skill_<name>, its timeout and its config, checked at validate.",
    )
    mcp_servers: dict[McpServerName, McpServer] = Field(
        default_factory=dict,
        description="MCP servers whose tools the model may call, by name (lowercase, up to 24 characters): over "
        "stdio (a command each engine worker starts) or streamable HTTP (a URL). Each allows only the tools it "
        "names in allow_tools. A server that is down does not stop the engine; it is retried with backoff.",
    )

    @property
    def active(self) -> list[str]:
        """The tools on, in the order of BUILTIN_TOOLS."""
        chosen = set(self.enabled)
        return [
            name
            for name, risk in BUILTIN_TOOLS.items()
            if (name in chosen or ("safe" in chosen and risk == "safe")) and name not in self.disabled
        ]

    @model_validator(mode="after")
    def _search_has_a_url(self) -> Tools:
        if "web_search" in self.active and self.settings.search.url is None:
            raise ValueError("web_search is on but tools.settings.search.url is not set")
        ruled = [rule.tool for rule in self.permissions]
        twice = sorted({name for name in ruled if ruled.count(name) > 1})
        if twice:
            raise ValueError(f"one permission rule per tool: {', '.join(twice)} has several")
        for name in ruled:
            self._rule_names_a_tool(name)
        return self

    def _rule_names_a_tool(self, name: str) -> None:
        """A rule for an MCP or skill tool must name one this spec declares (a typo would restrict nothing)."""
        if name.startswith("skill_") and name not in BUILTIN_TOOLS:
            skills = {f"skill_{PurePosixPath(path).name}" for path in self.skill_folders}
            if name not in skills:
                raise ValueError(f"permission for {name}: no skill folder of that name in tools.skill_folders")
        elif name.startswith("mcp_") and name not in BUILTIN_TOOLS:
            server, tool = name.removeprefix("mcp_").split("__", 1)
            declared = self.mcp_servers.get(server)
            if declared is None:
                raise ValueError(f"permission for {name}: no MCP server '{server}' in tools.mcp_servers")
            if "*" not in declared.allow_tools and tool not in declared.allow_tools:
                raise ValueError(f"permission for {name}: '{tool}' is not in tools.mcp_servers.{server}.allow_tools")
