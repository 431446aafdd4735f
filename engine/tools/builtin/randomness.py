"""random_number and uuid: from the operating system's random source (secrets), never a seeded PRNG."""

from __future__ import annotations

import secrets
import uuid as uuid_module

from pydantic import Field, model_validator

from ..base import Arguments, Tool, ToolContext

_LIMIT = 10**18


class RandomArgs(Arguments):
    minimum: int = Field(1, ge=-_LIMIT, le=_LIMIT, description="Smallest possible value (included).")
    maximum: int = Field(100, ge=-_LIMIT, le=_LIMIT, description="Largest possible value (included).")
    count: int = Field(1, ge=1, le=100, description="How many numbers to draw.")

    @model_validator(mode="after")
    def _ordered(self) -> RandomArgs:
        if self.minimum > self.maximum:
            raise ValueError("minimum must not be larger than maximum")
        return self


async def random_number(args: RandomArgs, context: ToolContext) -> str:
    span = args.maximum - args.minimum + 1
    return ", ".join(str(args.minimum + secrets.randbelow(span)) for _ in range(args.count))


class UuidArgs(Arguments):
    count: int = Field(1, ge=1, le=100, description="How many UUIDs to make.")


async def make_uuid(args: UuidArgs, context: ToolContext) -> str:
    return "\n".join(str(uuid_module.uuid4()) for _ in range(args.count))


TOOLS = (
    Tool(
        "random_number",
        "Whole random numbers between a minimum and a maximum, both included.",
        RandomArgs,
        random_number,
    ),
    Tool("uuid", "Random (version 4) UUIDs.", UuidArgs, make_uuid),
)
