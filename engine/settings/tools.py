"""What the engine's tools and skills are told by the settings: the shipped tools and their risk
class, each tool's options, MCP servers, permissions, approvals, plugin skills and skill folders.

Part of the settings contract (engine/settings/__init__.py re-exports every name)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import SettingsModel

# The skills shipped in engine/skills/builtin.py, usable as `builtin:<name>`.
BUILTIN_SKILLS = ("redact", "reply_limit", "system_prompt")


class SkillSettings(SettingsModel):
    name: str
    entrypoint: str
    hooks: list[Literal["pre", "post"]]
    timeout_seconds: float
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)


SKILL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class SkillFolderSettings(SettingsModel):
    """A skill folder shipped with the release (engine/skills/folders.py)."""

    name: str = Field(pattern=SKILL_NAME_PATTERN)
    path: str  # the folder on the host, e.g. <root>/current/skills/<name>
    digest: str  # sha256 over the folder's shipped files: a changed skill changes settings.json
    description: str  # what the model and /help-like listings see
    command: str | None = None  # e.g. "/weather": a user message whose first word is this runs the skill, no model call
    tool: bool = True  # offered to the model as the tool `skill_<name>`
    config: dict[str, Any] = Field(default_factory=dict)  # the values for the handler's Config model
    timeout_seconds: float = Field(30, gt=0)


# The tools shipped in engine/tools/builtin/ and their risk class: safe (no effect beyond the
# user's own data and the model), network (reaches other hosts), machine (touches this host).
# engine/tools' registry must hold exactly these (tests/engine/test_tools_registry.py).
BUILTIN_TOOLS: dict[str, Literal["safe", "network", "machine"]] = {
    "current_time": "safe",
    "convert_timezone": "safe",
    "date_add": "safe",
    "date_diff": "safe",
    "calculator": "safe",
    "convert_units": "safe",
    "random_number": "safe",
    "uuid": "safe",
    "notes_save": "safe",
    "notes_list": "safe",
    "notes_delete": "safe",
    "send_message": "safe",
    "summarize_conversation": "safe",
    "translate": "safe",
    "generate_code": "safe",
    "http_fetch": "network",
    "web_page_text": "network",
    "web_search": "network",
    "workspace_list": "machine",
    "workspace_read": "machine",
    "workspace_search": "machine",
    "workspace_write": "machine",
    "workspace_edit": "machine",
    "workspace_patch": "machine",
    "python": "machine",
    "shell": "machine",
    "browser": "machine",
}
SAFE_TOOLS = [name for name, risk in BUILTIN_TOOLS.items() if risk == "safe"]


class FetchToolSettings(SettingsModel):
    """http_fetch and web_page_text: where they may go and how much they may read."""

    # Empty: any public host; otherwise these domains and their subdomains only.
    allowed_domains: list[str] = Field(default_factory=list)
    # Networks reachable although private, loopback, link-local or reserved (CIDR), e.g. an intranet.
    allowed_networks: list[str] = Field(default_factory=list)
    max_bytes: int = Field(1_000_000, ge=1)
    timeout_seconds: float = Field(10, gt=0)
    max_redirects: int = Field(5, ge=0)


class SearchToolSettings(SettingsModel):
    """web_search: a SearXNG instance answering `format=json`."""

    url: str | None = None
    max_results: int = Field(5, ge=1, le=50)
    timeout_seconds: float = Field(10, gt=0)


class BrowserToolSettings(SettingsModel):
    """browser: Chromium driven by Playwright (engine/tools/builtin/browser.py). Every request the
    page makes is checked like a fetch: its host must be in `allowed_domains` (empty: no site at
    all) and its addresses public unless in `allowed_networks`."""

    allowed_domains: list[str] = Field(default_factory=list)
    allowed_networks: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(15, gt=0)  # one action: a navigation, a click, a screenshot
    idle_seconds: float = Field(300, gt=0)  # a user's browser session is closed after this long unused
    max_redirects: int = Field(5, ge=0)
    viewport_width: int = Field(1280, ge=200, le=4096)
    viewport_height: int = Field(800, ge=200, le=4096)


class NotesToolSettings(SettingsModel):
    max_notes_per_user: int = Field(500, ge=1)
    max_note_chars: int = Field(4000, ge=1)


# Programs the shell tool runs when the spec names none: they read and compare files, nothing more.
DEFAULT_SHELL_COMMANDS = ["ls", "cat", "head", "tail", "wc", "grep", "sort", "uniq", "cut", "diff", "du"]


class MachineToolSettings(SettingsModel):
    """The machine tools (workspace_*, python, shell): every call runs in a bubblewrap sandbox
    (engine/tools/sandbox.py) whose only writable place is the caller's workspace."""

    # Where the per-user workspaces live; None: <data_dir>/../workspaces. Never inside data_dir:
    # the sandbox's uid must traverse every parent (o+x), and data_dir is 0700.
    workspaces_dir: str | None = None
    workspace_quota_bytes: int = Field(256 << 20, ge=1 << 20)
    wall_seconds: float = Field(15, gt=0)
    cpu_seconds: int = Field(10, ge=1)
    memory_bytes: int = Field(1 << 30, ge=64 << 20)
    processes: int = Field(64, ge=4)
    file_bytes: int = Field(64 << 20, ge=1 << 10)
    output_bytes: int = Field(1 << 20, ge=1 << 10)
    # The shell tool's programs, by name: each is run as /usr/bin/<name> inside the sandbox.
    shell_commands: list[str] = Field(default_factory=lambda: list(DEFAULT_SHELL_COMMANDS))


class ApprovalSettings(SettingsModel):
    """When a machine tool waits for the user's yes (engine/tools/approval.py): `never`, only in a
    request that has seen text from the network (`tainted`, the default), or `always`; an
    unanswered question counts as a no after `timeout_seconds`."""

    machine: Literal["never", "tainted", "always"] = "tainted"
    timeout_seconds: float = Field(60, gt=0)


class ToolPermissionSettings(SettingsModel):
    """Who may use one tool: empty lists do not restrict, both lists must admit the caller."""

    tool: str
    channels: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)


# An MCP server's name: its tools reach the model as mcp_<name>__<tool> (engine/tools/mcp.py), and
# OpenAI's tool names are ^[a-zA-Z0-9_-]{1,64}$, so it is short and has no "__" of its own.
MCP_SERVER_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,23}$"


class McpServerSettings(SettingsModel):
    """One MCP server whose allowed tools the model may call (engine/tools/mcp.py).

    stdio: `command` with `args` is started by each worker, with `env` over a minimal environment;
    http: streamable HTTP at `url`, with `headers`. `env_secrets` / `header_secrets` map a variable
    or header to the secrets-file entry holding its value. `allow_tools` names the server's own
    tool names; ["*"] allows all; empty allows none."""

    name: str = Field(pattern=MCP_SERVER_NAME_PATTERN)
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    env_secrets: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    header_secrets: dict[str, str] = Field(default_factory=dict)
    allow_tools: list[str] = Field(default_factory=list)
    # Seconds one call may take (the tools' step_timeout_seconds still caps it), and seconds a
    # connection (process start or HTTP, plus the MCP handshake and the tool listing) may take.
    timeout_seconds: float = Field(30, gt=0)
    connect_timeout_seconds: float = Field(10, gt=0)

    @model_validator(mode="after")
    def _has_its_transport(self) -> McpServerSettings:
        if "__" in self.name:
            raise ValueError(f"MCP server name '{self.name}' must not contain '__'")
        if self.transport == "stdio" and not self.command:
            raise ValueError(f"MCP server '{self.name}': transport stdio needs a command")
        if self.transport == "http" and not self.url:
            raise ValueError(f"MCP server '{self.name}': transport http needs a url")
        return self


class ToolsSettings(SettingsModel):
    # The tools the model may call, resolved by the renderer (no groups, nothing disabled).
    enabled: list[str] = Field(default_factory=lambda: list(SAFE_TOOLS))
    permissions: list[ToolPermissionSettings] = Field(default_factory=list)
    max_steps: int = Field(8, ge=1)
    step_timeout_seconds: float = Field(20, gt=0)
    output_limit_bytes: int = Field(16_000, ge=256)
    fetch: FetchToolSettings = FetchToolSettings()
    search: SearchToolSettings = SearchToolSettings()
    notes: NotesToolSettings = NotesToolSettings()
    machine: MachineToolSettings = MachineToolSettings()
    browser: BrowserToolSettings = BrowserToolSettings()
    approval: ApprovalSettings = ApprovalSettings()
    # Connected by each worker at start, in the background (a server down does not stop the engine).
    mcp_servers: list[McpServerSettings] = Field(default_factory=list)
