"""date_add and date_diff: calendar arithmetic (months and years through dateutil's relativedelta)."""

from __future__ import annotations

from datetime import datetime

from dateutil.relativedelta import relativedelta
from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError
from .clock import parse_datetime, show, zone

_SPAN = 100_000  # no unit may move a date by more than this: datetime ends at year 9999 anyway


class AddArgs(Arguments):
    start: str | None = Field(None, description="ISO 8601 date or date-time; now when omitted.", max_length=64)
    timezone: str = Field("UTC", description="Timezone of `start` (and of now).", max_length=64)
    years: int = Field(0, ge=-_SPAN, le=_SPAN)
    months: int = Field(0, ge=-_SPAN, le=_SPAN)
    weeks: int = Field(0, ge=-_SPAN, le=_SPAN)
    days: int = Field(0, ge=-_SPAN * 10, le=_SPAN * 10)
    hours: int = Field(0, ge=-_SPAN * 100, le=_SPAN * 100)
    minutes: int = Field(0, ge=-_SPAN * 1000, le=_SPAN * 1000)


async def date_add(args: AddArgs, context: ToolContext) -> str:
    tz = zone(args.timezone)
    start = parse_datetime(args.start, tz) if args.start else datetime.now(tz)
    delta = relativedelta(
        years=args.years, months=args.months, weeks=args.weeks, days=args.days, hours=args.hours, minutes=args.minutes
    )
    try:
        return show(start + delta)
    except (OverflowError, ValueError):
        raise ToolError("the result is outside the years 1 to 9999") from None


class DiffArgs(Arguments):
    start: str = Field(description="ISO 8601 date or date-time.", max_length=64)
    end: str = Field(description="ISO 8601 date or date-time.", max_length=64)
    timezone: str = Field("UTC", description="Timezone of dates given without an offset.", max_length=64)


async def date_diff(args: DiffArgs, context: ToolContext) -> str:
    tz = zone(args.timezone)
    start, end = parse_datetime(args.start, tz), parse_datetime(args.end, tz)
    span = relativedelta(end, start)
    total = end - start
    parts = [f"{abs(value)} {unit}" for unit, value in _units(span) if value]
    sign = "-" if total.total_seconds() < 0 else ""
    return (
        f"{sign}{', '.join(parts) or '0 days'} "
        f"(total {total.days} days and {total.seconds} seconds; {total.total_seconds():g} seconds)"
    )


def _units(span: relativedelta) -> list[tuple[str, int]]:
    return [
        ("years", span.years),
        ("months", span.months),
        ("days", span.days),
        ("hours", span.hours),
        ("minutes", span.minutes),
        ("seconds", span.seconds),
    ]


TOOLS = (
    Tool(
        "date_add",
        "Add (or subtract, with negative numbers) years, months, weeks, days, hours, minutes.",
        AddArgs,
        date_add,
    ),
    Tool("date_diff", "The time between two dates: calendar units and a total.", DiffArgs, date_diff),
)
