"""send_message: a message to the user through the channel of the current request."""

from __future__ import annotations

from pydantic import Field

from ..base import Arguments, Tool, ToolContext


class SendArgs(Arguments):
    text: str = Field(min_length=1, max_length=4000, description="The message to send to the user now.")


async def send_message(args: SendArgs, context: ToolContext) -> str:
    await context.send(args.text)
    return f"sent to {context.user} on {context.channel}"


TOOLS = (
    Tool(
        "send_message",
        "Send the user a message right away (a progress note, a reminder), before the final answer.",
        SendArgs,
        send_message,
    ),
)
