"""`tools.skills:` hooks run before the model and on its reply."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..types import Name, PositiveSeconds
from .base import Strict


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
