"""Skills: plugins declared in the spec that run around every model call.

A skill's entrypoint (`module:callable`, or `builtin:<name>` from skills_builtin) is called once
with the skill's `config` and returns an object with `async pre(messages) -> messages` (runs
before the model, on the messages sent to it) and/or `async post(text) -> text` (runs on the
complete reply before anyone sees or stores it). The spec's `hooks` chooses which of the two run.

A hook that raises or overruns its `timeout_seconds` fails the request (502 `skill_failed`):
a skill may be a guard (redaction, moderation), and skipping a guard silently would be worse than
an error. Post hooks need the complete reply, so a streamed request to an engine with post hooks
gets its reply as one event once the hooks have run.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import Any

from ..models.adapters.base import Message
from ..settings import SkillSettings
from .builtin import BUILTINS


class SkillFailed(Exception):
    """A hook raised or timed out; the message names the skill, never the conversation."""


@dataclass(frozen=True)
class LoadedSkill:
    name: str
    hooks: frozenset[str]
    timeout_seconds: float
    impl: Any


class Skills:
    def __init__(self, skills: list[LoadedSkill]) -> None:
        self._pre = [s for s in skills if "pre" in s.hooks]
        self._post = [s for s in skills if "post" in s.hooks]

    @property
    def has_post(self) -> bool:
        return bool(self._post)

    async def pre(self, messages: list[Message]) -> list[Message]:
        for skill in self._pre:
            messages = await _run(skill, skill.impl.pre, messages)
        return messages

    async def post(self, text: str) -> str:
        for skill in self._post:
            text = await _run(skill, skill.impl.post, text)
        return text


async def _run(skill: LoadedSkill, hook: Any, value: Any) -> Any:
    try:
        async with asyncio.timeout(skill.timeout_seconds):
            return await hook(value)
    except TimeoutError:
        raise SkillFailed(f"skill '{skill.name}' did not finish within {skill.timeout_seconds:g}s") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a plugin is reported the same way
        raise SkillFailed(f"skill '{skill.name}' failed: {type(exc).__name__}") from exc


def load_skills(settings: list[SkillSettings]) -> Skills:
    """Build every enabled skill; raises ValueError naming a skill that cannot be loaded."""
    loaded = []
    for skill in settings:
        module_name, _, attribute = skill.entrypoint.partition(":")
        try:
            if module_name == "builtin":
                factory = BUILTINS[attribute]
            else:
                factory = getattr(importlib.import_module(module_name), attribute)
            impl = factory(dict(skill.config))
        except Exception as exc:  # noqa: BLE001 - reported with the skill's name, at start-up
            raise ValueError(f"skill '{skill.name}' ({skill.entrypoint}) cannot be loaded: {exc!r}") from exc
        for hook in skill.hooks:
            if not callable(getattr(impl, hook, None)):
                raise ValueError(f"skill '{skill.name}' ({skill.entrypoint}) has no {hook}() hook")
        loaded.append(LoadedSkill(skill.name, frozenset(skill.hooks), skill.timeout_seconds, impl))
    return Skills(loaded)
