"""current_time and convert_timezone: IANA timezones through zoneinfo (tzdata ships the database)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; ToolError when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"no timezone '{name}' (use an IANA name such as 'Europe/Paris' or 'UTC')") from None


def parse_datetime(text: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 date or date-time; a naive one is read in `tz`."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(f"'{text}' is not an ISO 8601 date or date-time (2026-03-01T14:30)") from None
    return value if value.tzinfo else value.replace(tzinfo=tz)


def show(value: datetime) -> str:
    return f"{value.isoformat()} ({value.strftime('%A')}, {value.tzname()})"


class NowArgs(Arguments):
    timezone: str = Field("UTC", description="IANA timezone, e.g. 'Asia/Tokyo'.", max_length=64)


async def current_time(args: NowArgs, context: ToolContext) -> str:
    return show(datetime.now(zone(args.timezone)))


class ConvertArgs(Arguments):
    time: str = Field(description="ISO 8601 date-time, e.g. '2026-03-01T14:30'.", max_length=64)
    from_timezone: str = Field("UTC", description="Timezone of `time` when it carries no offset.", max_length=64)
    to_timezone: str = Field(description="IANA timezone to express the time in.", max_length=64)


async def convert_timezone(args: ConvertArgs, context: ToolContext) -> str:
    moment = parse_datetime(args.time, zone(args.from_timezone))
    return show(moment.astimezone(zone(args.to_timezone)))


TOOLS = (
    Tool("current_time", "The current date and time in a timezone.", NowArgs, current_time),
    Tool("convert_timezone", "Express a date-time from one timezone in another.", ConvertArgs, convert_timezone),
)
