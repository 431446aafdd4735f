"""From an authenticated inbound message to a reply on the platform, the same for every channel.

In the request (so the platform gets its 200 only after these are decided):
1. who: the user is `<channel>:<platform user id>`; the channel's allowed_users (platform id,
   username or the prefixed user) and security.allowed_users (the prefixed user) must admit it;
2. once: the delivery id is claimed in the history store's client-message table (the websocket
   channel's idempotency keys, shared by every worker and kept across restarts), so a redelivery
   of the same update, here or on another worker, finds the claim and is only acknowledged;
3. an answer: a yes or no while a machine tool in this chat waits for the user's approval
   (engine/tools/approval.py) answers it, through the store every worker shares (the waiting
   request may be another worker's), and is no chat turn of its own;
4. how often: the limits (engine/limits/policy.py), the rate limit keyed by the user (authenticated by
   the platform's signature, unlike a claimed API user; keying by IP would throttle every user of
   the platform at once), and the channel's model's quotas and the user's daily token budget.
Refusals are acknowledged with 200 too: a 4xx would only make the platform retry.

After the 200, in a task of this worker: the model call through the /api/v1/chat pipeline
(context, in_flight, the model with fallback and its tool loop, whose send_message goes straight
to the platform), the turn stored in the history under the claimed
message id, then the reply sent through the platform's API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request

from .. import logs
from ..api.bodies import DEFAULT_PRIORITY
from ..errors import ApiError
from ..history.sqlite import Row, new_id, tool_rows
from ..middleware import request_id
from ..models.adapters.base import UpstreamError
from ..models.router import Trace
from ..pipeline import chat_with_tools, in_flight, options, tool_loop
from ..runtime import Runtime
from ..tools.approval import Question, answer_of, store_for
from .base import ChannelConfig, Inbound, WebhookChannel, split_reply
from .outbound import Outbound
from .photos import screenshots_of, send_screenshots

FAILURE_TEXT = "Sorry, I could not answer that just now. Please try again in a moment."
TOO_LONG_TEXT = "Sorry, that message is too long for me. Please send a shorter one."
EMPTY_TEXT = "(the model gave an empty answer)"
# The answer to a photo, voice note, file... (Inbound.media) on WhatsApp and WeCom: their models are
# not given those yet (Telegram's photos and text files are: telegram_media.py).
MEDIA_TEXT = "Sorry, I can only read text messages for now."


def user_of(channel: WebhookChannel, inbound: Inbound) -> str:
    return f"{channel.name}:{inbound.user_id}"


def conversation_of(channel: WebhookChannel, inbound: Inbound, user: str) -> str:
    """One conversation per user and chat, so the model sees the chat's earlier turns."""
    digest = hashlib.sha256(f"{inbound.chat_id}\n{user}".encode()).hexdigest()[:32]
    return f"{channel.name}-{digest}"


class Deliveries:
    """The replies this worker is still producing; `close` gives them a grace period on shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    async def accept(
        self, request: Request, rt: Runtime, channel: WebhookChannel, config: ChannelConfig, inbound: Inbound
    ) -> None:
        """Admit, claim and rate-limit one message, then answer it in the background."""
        user = user_of(channel, inbound)
        request.state.user = user
        rid = request_id(request.scope)
        if not may_ask(rt, config, channel, inbound, user):
            note(rid, channel, user, "ignored: user not in allowed_users")
            return
        conversation_id, message_id = conversation_of(channel, inbound, user), new_id()
        client_id = f"webhook:{inbound.update_id}"
        store = rt.history.client_messages
        if await store.claim(user, client_id, conversation_id, message_id) is not None:
            note(rid, channel, user, f"ignored: update {inbound.update_id} was delivered before")
            return
        if await approval_answered(rt, inbound, user, conversation_id):
            note(rid, channel, user, f"update {inbound.update_id} answered an approval question")
            return
        entry = rt.catalog.entries.get(config.settings.model or rt.catalog.default)
        model = entry.settings if entry and inbound.media is None else None  # media: no model call
        refusal = await rt.limits.admit(rt.settings, user, user, model, request.url.path)
        if refusal is not None:  # acknowledged all the same: a 4xx would only make the platform retry
            await store.release(user, client_id, message_id)
            note(rid, channel, user, f"ignored: {refusal.limit} limit, retry after {refusal.retry_after} s")
            return
        trace = Trace(request_id=rid, user=user, started=time.monotonic())
        answer = Answer(rt, channel, config, inbound, trace, conversation_id, message_id, client_id)
        if inbound.media is not None:
            note(rid, channel, user, f"a {inbound.media} message: answered that only text is read")
        task = asyncio.create_task(answer.run() if inbound.media is None else answer.send(MEDIA_TEXT))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class Answer:
    """One message's reply on a chat channel: `run()` asks the model (approvals and tools included)
    and sends the reply; `send()` sends a text of the engine's own; `release()` gives the webhook
    claim back so a redelivery is answered. Channels with their own front door (Telegram's
    commands, media, polling: telegram_answer.py) build one and use the same steps."""

    def __init__(
        self,
        rt: Runtime,
        channel: WebhookChannel,
        config: ChannelConfig,
        inbound: Inbound,
        trace: Trace,
        conversation_id: str,
        message_id: str,
        client_id: str,
    ) -> None:
        self.rt, self.channel, self.config, self.inbound, self.trace = rt, channel, config, inbound, trace
        self.conversation_id, self.message_id, self.client_id = conversation_id, message_id, client_id
        # A photo or file the channel prepared for the model (content parts, or text) and the line
        # the history keeps for it instead of the bytes; None: the message's text, as it is.
        self.content: str | list[dict[str, Any]] | None = None
        self.stored: str | None = None
        self.screenshots: list[str] = []  # what the browser tool saved: sent as photos after the reply

    async def run(self) -> None:
        try:
            reply = await self._chat()
        except asyncio.CancelledError:
            await asyncio.shield(self.release())
            raise
        except ApiError as exc:  # no model could answer: nothing stored, the claim released
            self.log(logging.WARNING, f"no reply from the model: {exc.code}: {exc.message}")
            await self.release()
            reply = TOO_LONG_TEXT if exc.code == "message_too_long" else FAILURE_TEXT
            if exc.code == "invalid_arguments":  # a skill command's usage: the user can act on it
                reply = exc.message
        except Exception:  # noqa: BLE001 - a bug must be logged, never lost in a dropped task
            logs.APP.exception("webhook reply failed", extra={"fields": self._fields()})
            await self.release()
            return
        await self.send(reply)
        await send_screenshots(
            self.rt, self.channel, self.config, self.inbound, self.trace.user, self.screenshots, self.log
        )

    async def _chat(self) -> str:
        rt, trace, text = self.rt, self.trace, self.inbound.text
        content = text if self.content is None else self.content
        if len(content if isinstance(content, str) else text) > rt.settings.max_message_chars:
            raise ApiError(413, "message_too_long", f"message is over {rt.settings.max_message_chars} characters")
        context = await rt.history.context(self.conversation_id, trace.user, rt.settings.history_context_messages)
        messages = [*context, {"role": "user", "content": content}]
        catalog, requested = rt.catalog, self.config.settings.model
        channel = self.channel.name
        loop = tool_loop(
            rt,
            catalog,
            requested,
            trace,
            DEFAULT_PRIORITY,
            channel,
            self.send,
            ask=self._ask,
            chat=self.conversation_id,
        )
        async with in_flight(rt):
            model, reply = await chat_with_tools(
                rt, catalog, requested, messages, options(trace), trace, DEFAULT_PRIORITY, loop, channel=channel
            )
        rows = [Row(new_id(), self.conversation_id, trace.user, "user", text if self.stored is None else self.stored)]
        if loop is not None and loop.added:
            rows += tool_rows(self.conversation_id, trace.user, loop.added, model)
            self.screenshots = screenshots_of(loop.added)
        rows.append(
            Row(
                self.message_id,
                self.conversation_id,
                trace.user,
                "assistant",
                reply.text,
                model,
                reply.usage.output_tokens,
            )
        )
        await rt.history.append(rows)
        return reply.text

    async def _ask(self, question: Question) -> None:
        """An approval question as a message in the chat; the user's next yes/no answers it."""
        await self.send(question.text())

    async def send(self, text: str) -> None:
        outbound = Outbound(self.rt.clients, self.config.api_base)
        size = self.channel.reply_size
        try:
            for part in split_reply(text or EMPTY_TEXT, self.channel.max_reply, size):
                await self.channel.send(outbound, self.config, self.inbound, part)
        except UpstreamError as exc:
            self.log(logging.WARNING, f"reply not sent: {redacted(str(exc), self.config)}")

    async def release(self) -> None:
        try:
            await self.rt.history.client_messages.release(self.trace.user, self.client_id, self.message_id)
        except Exception as exc:  # noqa: BLE001 - a stale claim only means a redelivery is ignored
            self.log(logging.WARNING, f"webhook claim not released: {type(exc).__name__}")

    def _fields(self) -> dict[str, str]:
        return {"request_id": self.trace.request_id, "user": self.trace.user, "channel": self.channel.name}

    def log(self, level: int, message: str) -> None:
        logs.event(logs.APP, level, message, **self._fields())


async def approval_answered(rt: Runtime, inbound: Inbound, user: str, conversation_id: str) -> bool:
    """Whether the message is a yes or no that answered the open approval question of this
    conversation (which it then did)."""
    approve = answer_of(inbound.text)
    if approve is None:
        return False
    return await store_for(Path(rt.settings.data_dir)).answer_latest(user, conversation_id, approve)


def may_ask(rt: Runtime, config: ChannelConfig, channel: WebhookChannel, inbound: Inbound, user: str) -> bool:
    """The channel's allowed_users and security.allowed_users (empty lists admit everyone)."""
    names = {inbound.user_id, *inbound.aliases}
    prefixed = {f"{channel.name}:{name}" for name in names}
    listed = config.settings.allowed_users
    if listed and not (names | prefixed) & set(listed):
        return False
    everyone = rt.auth.allowed
    return not everyone or bool(prefixed & everyone)


def note(rid: str, channel: WebhookChannel, user: str, message: str) -> None:
    """An INFO line for a message answered with nothing (refused, ignored, a redelivery)."""
    logs.event(logs.APP, logging.INFO, message, request_id=rid, user=user, channel=channel.name)


def redacted(message: str, config: ChannelConfig) -> str:
    """`message` with the channel's secrets (a bot token in a URL) replaced by [secret]."""
    for value in config.secrets.values():
        message = message.replace(value, "[secret]")
    return message
