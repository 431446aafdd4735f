"""convert_units: quantities from one unit to another through pint's unit registry."""

from __future__ import annotations

import asyncio
import functools
import math
from typing import TYPE_CHECKING

from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError

if TYPE_CHECKING:
    import pint


@functools.cache
def registry() -> pint.UnitRegistry:
    """Built once per process (it parses pint's definitions file: too slow for every call). pint
    itself (~3.5 MB per worker) is imported here, by the first conversion, not at worker start."""
    import pint  # noqa: PLC0415

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


class UnitArgs(Arguments):
    value: float = Field(description="The amount to convert.")
    from_unit: str = Field(description="Unit of `value`, e.g. 'mile', 'degF', 'kWh', 'km/h'.", max_length=64)
    to_unit: str = Field(description="Unit wanted, of the same dimension.", max_length=64)


def convert(value: float, from_unit: str, to_unit: str) -> str:
    units = registry()
    import pint  # noqa: PLC0415 - loaded by registry() already: only its errors are wanted here

    try:
        result = units.Quantity(value, units.parse_units(from_unit)).to(units.parse_units(to_unit))
    except pint.errors.DimensionalityError as exc:
        raise ToolError(
            f"cannot convert {exc.dim1 or from_unit} to {exc.dim2 or to_unit}: different dimensions"
        ) from None
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError, ValueError) as exc:
        raise ToolError(f"unknown unit ({exc})") from None
    magnitude = float(result.magnitude)
    if not math.isfinite(magnitude):
        raise ToolError("the result is not a finite number")
    return f"{value:g} {from_unit} = {magnitude:.10g} {to_unit}"


async def convert_units(args: UnitArgs, context: ToolContext) -> str:
    return await asyncio.to_thread(convert, args.value, args.from_unit, args.to_unit)


TOOLS = (
    Tool(
        "convert_units",
        "Convert a quantity between units (length, mass, temperature, speed ...).",
        UnitArgs,
        convert_units,
    ),
)
