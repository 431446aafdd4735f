"""The base of every settings model: unknown keys are errors, and a loaded model never changes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
