"""`tools:` what the assistant can use beyond the model itself."""

from __future__ import annotations

from pydantic import Field

from .base import Strict
from .skills import Skill


class Tools(Strict):
    """What the assistant can use beyond the model, in one section: today its skills, the hooks run
    before the model and on its reply."""

    skills: list[Skill] = Field(
        default_factory=list, description="Hooks run before the model and on its reply, in order; none by default."
    )
