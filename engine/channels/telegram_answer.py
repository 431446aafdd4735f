"""How a Telegram message is answered, by webhook or by polling: the chat's own commands
(telegram_commands.py) with no model call, the chat's conversation (renewed by /reset) and model
(chosen with /model), and "typing..." shown while the model works. The rest (who may ask, the
approval answers, the limits, the model call and the reply) is delivery.py's, as for every channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time

from ..history.sqlite import new_id
from ..models.adapters.base import UpstreamError
from ..models.router import Trace
from ..runtime import Runtime
from . import telegram_media
from .base import ChannelConfig, Inbound
from .delivery import FAILURE_TEXT, Answer, approval_answered, may_ask, note, redacted, user_of
from .outbound import Outbound
from .telegram import Telegram, bot_call
from .telegram_commands import command_reply
from .telegram_state import State

TYPING_EVERY_SECONDS = 4.0  # Telegram shows "typing..." for 5 s or until the next message


def conversation_for(inbound: Inbound, user: str, generation: int) -> str:
    """delivery.conversation_of's id (so generation 0 is the chat's conversation from before
    /reset existed), made new by each /reset of the chat."""
    tail = f"\n{generation}" if generation else ""
    digest = hashlib.sha256(f"{inbound.chat_id}\n{user}{tail}".encode()).hexdigest()[:32]
    return f"{Telegram.name}-{digest}"


async def answer_message(
    rt: Runtime, config: ChannelConfig, state: State, inbound: Inbound, message_id: str | None = None
) -> None:
    """Answer one message; returns once the reply is sent (or refused, or failed and logged).
    `message_id`: the one the webhook claimed the update `webhook:<update_id>` with; a refusal or a
    failure releases that claim, so that Telegram's redelivery is answered."""
    channel = Telegram()
    user, rid = user_of(channel, inbound), f"telegram-{inbound.update_id}"
    if not may_ask(rt, config, channel, inbound, user):
        note(rid, channel, user, "ignored: user not in allowed_users")
        return
    generation, chosen = await state.chat(inbound.chat_id)
    conversation_id = conversation_for(inbound, user, generation)
    if chosen in rt.catalog.entries:
        chat_settings = config.settings.model_copy(update={"model": chosen})
        config = ChannelConfig(chat_settings, config.secrets, config.api_base)
    trace = Trace(request_id=rid, user=user, started=time.monotonic())
    client_id = f"webhook:{inbound.update_id}"
    answer = Answer(rt, channel, config, inbound, trace, conversation_id, message_id or new_id(), client_id)
    reply = await command_reply(rt, state, inbound, config.settings.model)
    if reply is not None:
        await answer.send(reply)
        return
    if await approval_answered(rt, inbound, user, conversation_id):
        return
    entry = rt.catalog.entries.get(config.settings.model or rt.catalog.default)
    images = entry is not None and "image" in entry.settings.input
    model = entry.settings if entry and _to_model(inbound, images) else None
    refusal = await rt.limits.admit(rt.settings, user, user, model, config.settings.path or channel.default_path)
    if refusal is not None:
        await answer.release()
        note(rid, channel, user, f"ignored: {refusal.limit} limit, retry after {refusal.retry_after} s")
        return
    if inbound.media is not None and not await _read_media(rt, config, answer, images):
        return
    typing = asyncio.create_task(_typing(Outbound(rt.clients, config.api_base), config, inbound.chat_id))
    try:
        await answer.run()
    finally:
        typing.cancel()


async def answers_approval(rt: Runtime, config: ChannelConfig, state: State, inbound: Inbound) -> bool:
    """Whether `inbound` is a yes or no of an allowed user that answered their chat's open approval
    question (and so was handled)."""
    channel = Telegram()
    user = user_of(channel, inbound)
    if not may_ask(rt, config, channel, inbound, user):
        return False
    generation, _ = await state.chat(inbound.chat_id)
    return await approval_answered(rt, inbound, user, conversation_for(inbound, user, generation))


def _to_model(inbound: Inbound, images: bool) -> bool:
    """Whether the message may go to the model (and so counts against its quotas)."""
    return inbound.media is None or telegram_media.for_model(inbound, images)


async def _read_media(rt: Runtime, config: ChannelConfig, answer: Answer, images: bool) -> bool:
    """Prepares a photo or text file for the model (True), or answers with the polite refusal."""
    inbound = answer.inbound
    try:
        readable = await telegram_media.readable(rt, config, inbound, images)
    except UpstreamError as exc:
        answer.log(logging.WARNING, f"telegram file not fetched: {redacted(str(exc), config)}")
        await answer.release()
        await answer.send(FAILURE_TEXT)
        return False
    if readable is None:  # the claim stays: a redelivery would only get the same refusal
        await answer.send(telegram_media.refusal(images))
        return False
    answer.content, answer.stored = readable.content, readable.stored
    return True


async def _typing(outbound: Outbound, config: ChannelConfig, chat_id: str) -> None:
    """Shows "typing..." in the chat until cancelled (when the reply is about to be sent)."""
    while True:
        with contextlib.suppress(UpstreamError):  # a cosmetic call: its failure changes nothing
            await bot_call(outbound, config, "sendChatAction", {"chat_id": int(chat_id), "action": "typing"})
        await asyncio.sleep(TYPING_EVERY_SECONDS)


async def accept_webhook(rt: Runtime, config: ChannelConfig, state: State, inbound: Inbound) -> str | None:
    """In the webhook request: claim the update (as delivery.Deliveries does, so a redelivery, here
    or on another worker, is only acknowledged); the message_id to answer under, or None to ignore."""
    channel = Telegram()
    user, rid = user_of(channel, inbound), f"telegram-{inbound.update_id}"
    if not may_ask(rt, config, channel, inbound, user):
        note(rid, channel, user, "ignored: user not in allowed_users")
        return None
    generation, _ = await state.chat(inbound.chat_id)
    message_id = new_id()
    claimed = await rt.history.client_messages.claim(
        user, f"webhook:{inbound.update_id}", conversation_for(inbound, user, generation), message_id
    )
    if claimed is not None:
        note(rid, channel, user, f"ignored: update {inbound.update_id} was delivered before")
        return None
    return message_id
