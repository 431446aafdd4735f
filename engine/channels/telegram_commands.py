"""Telegram's bot commands, answered by the engine itself with no model call: /start greets,
/reset starts a new conversation for the chat, /model lists the models or switches the chat's.

Other words starting with "/" are left alone (a skill folder's command, or plain text).
"""

from __future__ import annotations

from ..runtime import Runtime
from .base import Inbound
from .telegram_state import State

START_TEXT = "Hello! I am your assistant: send me a message and I will answer. /reset starts over, /model picks one."
RESET_TEXT = "Started a new conversation: I no longer see the earlier messages of this chat."


def command_of(text: str) -> tuple[str, str] | None:
    """(command, argument) for "/cmd", "/cmd@botname arg"; None for anything else."""
    if not text.startswith("/"):
        return None
    word, _, rest = text.strip().partition(" ")
    return word.split("@", 1)[0].lower(), rest.strip()


async def command_reply(rt: Runtime, state: State, inbound: Inbound, default_model: str | None) -> str | None:
    """The answer to a command this module handles (after acting on it), or None."""
    parsed = command_of(inbound.text) if inbound.media is None else None
    if parsed is None:
        return None
    command, argument = parsed
    if command == "/start":
        return START_TEXT
    if command == "/reset":
        await state.reset(inbound.chat_id)
        return RESET_TEXT
    if command != "/model":
        return None
    names = rt.catalog.names()
    _, chosen = await state.chat(inbound.chat_id)
    current = chosen if chosen in names else (default_model or rt.catalog.default)
    if not argument:
        return f"Current model: {current}. Models: {', '.join(names)}. Send /model <name> to switch."
    if argument not in names:
        return f"There is no model {argument[:64]!r}. Models: {', '.join(names)}."
    await state.choose_model(inbound.chat_id, argument)
    return f"This chat now uses {argument}."
