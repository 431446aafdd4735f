"""The base of every spec model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors everywhere in the spec, and values are never coerced (a quoted "600"
    is not an integer), exactly as the published JSON Schema says."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
