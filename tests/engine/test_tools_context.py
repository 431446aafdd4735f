"""A fake `ToolContext` for the tool tests (imported by the other test_tools_* modules), and the
proof that the plain `Context` the loop will build carries everything a tool may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistantctl.engine.settings import ToolsSettings
from assistantctl.engine.tools import Context, ToolContext


@dataclass
class FakeServices:
    """What a tool asked of the engine: model calls (answered with `answer`) and sent messages."""

    answer: str = "fake answer"
    prompts: list[list[dict[str, Any]]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)

    async def complete(self, messages: list[dict[str, Any]]) -> str:
        self.prompts.append(messages)
        return self.answer

    async def send(self, text: str) -> None:
        self.sent.append(text)


def fake_context(
    data_dir: Path,
    *,
    user: str = "alice",
    channel: str = "web",
    settings: ToolsSettings | None = None,
    messages: list[dict[str, Any]] | None = None,
    services: FakeServices | None = None,
) -> Context:
    services = services or FakeServices()
    return Context(
        user=user,
        channel=channel,
        request_id="req-test-1",
        messages=messages or [],
        data_dir=data_dir,
        settings=settings or ToolsSettings(),
        complete=services.complete,
        send=services.send,
    )


def test_the_plain_context_has_every_member_of_the_protocol(tmp_path: Path):
    context = fake_context(tmp_path)
    members = set(ToolContext.__annotations__)
    assert members == {"user", "channel", "request_id", "messages", "data_dir", "settings", "complete", "send"}
    assert all(hasattr(context, name) for name in members)
