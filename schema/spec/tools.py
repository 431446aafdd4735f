"""`tools:` what the assistant can use beyond the model itself."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, HttpUrl, model_validator

from ...engine.settings import BUILTIN_TOOLS
from ..types import IPNetwork, PositiveSeconds
from .base import Strict
from .skills import Skill

# A shipped tool's name (engine/settings.py BUILTIN_TOOLS): a typo is an error with a did-you-mean.
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


class ToolSettings(Strict):
    fetch: FetchTool = Field(default_factory=FetchTool, description="http_fetch and web_page_text.")
    search: SearchTool = Field(default_factory=SearchTool, description="web_search.")
    notes: NotesTool = Field(default_factory=NotesTool, description="notes_save, notes_list, notes_delete.")


class ToolPermission(Strict):
    tool: ToolName = Field(description="The tool this rule restricts.")
    channels: list[ChannelName] = Field(default_factory=list, description="Channels it may be used on; empty: all.")
    users: list[str] = Field(default_factory=list, description="Users who may use it; empty: everyone.")


class Tools(Strict):
    """What the assistant can use beyond the model, in one section: its skills (hooks run before the
    model and on its reply) and the tools the model may call."""

    skills: list[Skill] = Field(
        default_factory=list, description="Hooks run before the model and on its reply, in order; none by default."
    )
    enabled: list[ToolChoice] = Field(
        default_factory=lambda: ["safe"],
        description="Tools the model may call; 'safe' stands for every safe tool (the default). Network tools "
        "(http_fetch, web_page_text, web_search) are on only when named.",
    )
    disabled: list[ToolName] = Field(default_factory=list, description="Tools kept off even when 'enabled' has them.")
    settings: ToolSettings = Field(default_factory=ToolSettings, description="Options of the tools that have some.")
    permissions: list[ToolPermission] = Field(
        default_factory=list,
        description="Who may use a tool: a tool without a rule is open to every user on every channel.",
    )
    max_steps: int = Field(8, ge=1, le=50, description="Tool calls the model may make for one request.")
    step_timeout_seconds: PositiveSeconds = Field(20, description="Seconds one tool call may take.")
    output_limit_bytes: int = Field(
        16_000, ge=256, le=1_000_000, description="Bytes of one tool's answer at most; more is an error."
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
        return self
