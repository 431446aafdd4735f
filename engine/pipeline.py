"""The steps every chat-like endpoint shares: admission, the model call, and error mapping.

Admission: who the user is (auth), whether they may ask now (rate limit), whether this worker
has room (max_in_flight). The model call runs under the request deadline; router and timeout
errors become ApiErrors with the right status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from starlette.requests import Request

from . import logs, metrics
from .errors import ApiError, upstream_failure
from .limits.policy import MeteredStream
from .middleware import request_id
from .models.adapters.base import CallOptions, Chunk, Message, Reply, UpstreamError, Usage
from .models.catalog import Catalog
from .models.router import AllModelsFailed, ModelStream, NoModelAvailable, Trace
from .runtime import Runtime
from .security.pii import Masker
from .security.pii_placeholders import RestoringStream, hide_pii
from .skills.folders import CommandArgumentsError
from .skills.plugins import SkillFailed
from .tools.approval import Ask
from .tools.base import Context
from .tools.loop import Assembler, Event, ToolLoop, offered


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def admit(
    request: Request,
    rt: Runtime,
    claimed_user: str | None,
    scope: str = "chat",
    *,
    model: str | None = None,
) -> str:
    """Authenticate (the caller must hold `scope`) and apply the limits (engine/limits/policy.py);
    returns the user. A "chat" request calls `model` (None: the default), so that model's limits
    and the daily token budget apply too. Raises 401/403/429 as ApiErrors."""
    user = rt.auth.user(request, claimed_user, scope)
    request.state.user = user
    key = user if rt.settings.rate_limit.key == "user" else (request.client.host if request.client else "-")
    entry = rt.catalog.entries.get(model or rt.catalog.default) if scope == "chat" else None
    refusal = await rt.limits.admit(rt.settings, user, key, entry.settings if entry else None, request.url.path)
    if refusal is not None:
        raise refusal.error()
    return user


class in_flight:  # noqa: N801 - used as `async with in_flight(rt):`, like a function
    """Count a model call as in flight; 503 when the worker is at max_in_flight already. A class
    rather than an @asynccontextmanager: this runs on every request, and the generator machinery
    cost more than the counting."""

    __slots__ = ("rt",)

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def __aenter__(self) -> None:
        rt = self.rt
        if rt.in_flight >= rt.settings.max_in_flight:
            raise ApiError(503, "overloaded", "the engine is at max_in_flight, retry later", {"Retry-After": "1"})
        rt.in_flight += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self.rt.in_flight -= 1


def check_model(catalog: Catalog, name: str | None) -> None:
    if name is not None and name not in catalog.entries:
        raise ApiError(404, "unknown_model", f"no model named {name!r}; see GET /v1/models")


def new_trace(request: Request, user: str) -> Trace:
    return Trace(request_id=request_id(request.scope), user=user, started=time.monotonic())


def options(
    trace: Trace, max_tokens: int | None = None, temperature: float | None = None, extra: dict[str, Any] | None = None
) -> CallOptions:
    return CallOptions(request_id=trace.request_id, max_tokens=max_tokens, temperature=temperature, extra=extra)


async def call_model(
    rt: Runtime,
    catalog: Catalog,
    model: str | None,
    messages: list[Message],
    opts: CallOptions,
    trace: Trace,
    priority: int,
) -> tuple[str, Reply]:
    """The model's reply to `messages`, with the skills' pre and post hooks run around the call."""
    skills = rt.skills  # this request keeps the skills it started with, whatever a reload does
    try:
        async with asyncio.timeout(rt.settings.request_timeout_seconds):
            messages, hidden = hide_pii(_before_model(rt), await skills.pre(messages))
            answered_by, reply = await rt.router.chat(catalog, model, messages, opts, trace, priority)
            if hidden:
                reply = hidden.restored_reply(reply)
            if skills.has_post:
                reply = replace(reply, text=await skills.post(reply.text))
    except (TimeoutError, NoModelAvailable, AllModelsFailed, SkillFailed) as exc:
        raise _mapped(exc, trace) from None
    if rt.limits.meters(rt.settings):  # the token limits are charged what the call really used
        entry = catalog.entries.get(answered_by)
        tokens = reply.usage.input_tokens + reply.usage.output_tokens
        await rt.limits.charge(rt.settings, trace.user, entry.settings if entry else None, tokens)
    return answered_by, reply


async def open_stream(
    rt: Runtime,
    catalog: Catalog,
    model: str | None,
    messages: list[Message],
    opts: CallOptions,
    trace: Trace,
    priority: int,
    deadline: float,
    *,
    channel: str | None = None,
) -> ModelStream | CompleteStream | RestoringStream | MeteredStream:
    """A stream of the model's reply, started; with post hooks, the whole hooked reply as one chunk.
    With `channel`, a skill folder's command answers instead of the model (`run_command`)."""
    if channel is not None and (answered := await run_command(rt, messages, trace, channel)) is not None:
        return CompleteStream(*answered)
    skills = rt.skills
    try:
        async with asyncio.timeout_at(deadline):
            messages, hidden = hide_pii(_before_model(rt), await skills.pre(messages))
            if not skills.has_post:
                stream = await rt.router.stream(catalog, model, messages, opts, trace, priority)
                return _metered(rt, catalog, trace, hidden.restoring(stream) if hidden else stream)
            answered_by, reply = await rt.router.chat(catalog, model, messages, opts, trace, priority)
            if hidden:
                reply = hidden.restored_reply(reply)
            return _metered(
                rt, catalog, trace, CompleteStream(answered_by, replace(reply, text=await skills.post(reply.text)))
            )
    except (TimeoutError, NoModelAvailable, AllModelsFailed, SkillFailed) as exc:
        raise _mapped(exc, trace) from None


def tool_loop(
    rt: Runtime,
    catalog: Catalog,
    model: str | None,
    trace: Trace,
    priority: int,
    channel: str,
    send: Callable[[str], Any] | None = None,
    *,
    ask: Ask | None = None,
    chat: str | None = None,
) -> ToolLoop | None:
    """The request's tool loop, or None when the caller may use no tool (then nothing changes).
    `ask` puts an approval question through the channel, `chat` is where a yes/no answers it
    (engine/tools/approval.py); without `ask` a call that needs approval is refused."""
    tools = offered(rt.tools, channel, trace.user)
    if not tools:
        return None

    async def complete(messages: list[Message]) -> str:
        return (await call_model(rt, catalog, model, messages, options(trace), trace, priority))[1].text

    data_dir = Path(rt.settings.data_dir)
    return ToolLoop(rt.tools, tools, trace.user, channel, trace.request_id, data_dir, complete, send, ask, chat)


async def chat_with_tools(
    rt: Runtime,
    catalog: Catalog,
    model: str | None,
    messages: list[Message],
    opts: CallOptions,
    trace: Trace,
    priority: int,
    loop: ToolLoop | None,
    *,
    channel: str | None = None,
) -> tuple[str, Reply]:
    """`call_model`, and while the model asks for tools, the tools and the model again (all within
    request_timeout_seconds); `loop.added` then holds the tool messages. With `channel`, a skill
    folder's command answers instead of the model (`run_command`)."""
    if channel is not None and (answered := await run_command(rt, messages, trace, channel)) is not None:
        return answered
    if loop is None:
        return await call_model(rt, catalog, model, messages, opts, trace, priority)
    # The first call is bounded by call_model's own request_timeout_seconds; the loop's deadline
    # counts from now but is armed only when a tool step follows: most requests ask for no tool,
    # and arming a timer for each of them cost ~8 us of CPU (issue 13: the tool layer's budget).
    deadline = asyncio.get_running_loop().time() + rt.settings.request_timeout_seconds
    answered_by, reply = await _tool_turn(rt, catalog, model, messages, opts, trace, priority, loop)
    if loop.wants_tools(reply.tool_calls):
        try:
            async with asyncio.timeout_at(deadline):
                while loop.wants_tools(reply.tool_calls):
                    async for _ in loop.step(reply.text, reply.tool_calls, messages):
                        pass
                    conversation = [*messages, *loop.added]
                    answered_by, reply = await _tool_turn(rt, catalog, model, conversation, opts, trace, priority, loop)
        except TimeoutError:
            raise _mapped(TimeoutError(), trace) from None
    return answered_by, loop.final(reply)


async def _tool_turn(
    rt: Runtime,
    catalog: Catalog,
    model: str | None,
    conversation: list[Message],
    opts: CallOptions,
    trace: Trace,
    priority: int,
    loop: ToolLoop,
) -> tuple[str, Reply]:
    """One model call of a tool loop: the tools offered (or tool_choice none), its usage counted."""
    answered_by, reply = await call_model(rt, catalog, model, conversation, loop.options(opts), trace, priority)
    loop.count(reply.usage)
    return answered_by, reply


async def run_command(rt: Runtime, messages: list[Message], trace: Trace, channel: str) -> tuple[str, Reply] | None:
    """("skill:<name>", its reply) when the user's message starts with a skill folder's command
    (engine/skills/folders.py), else None: the skill answers, no model is called. Its text goes
    through the post hooks like a model's reply. Raises 400 `invalid_arguments` (what the command
    expects) when the text does not fit the skill's arguments, 502 `skill_failed` when the skill
    raises, overruns its timeout or answers more than tools.output_limit_bytes."""
    last = messages[-1] if messages else {}
    found = rt.skill_folders.command(last.get("content")) if last.get("role") == "user" else None
    if found is None:
        return None
    skill, rest = found
    tools = rt.settings.tools
    context = Context(trace.user, channel, trace.request_id, messages, Path(rt.settings.data_dir), tools, _no, _no)
    try:
        outcome, text = await rt.skill_folders.run_command(skill, rest, tools, context)
        if outcome != "ok":
            raise SkillFailed(text)
        if rt.skills.has_post:
            text = await rt.skills.post(text)
    except CommandArgumentsError as exc:
        raise ApiError(400, "invalid_arguments", str(exc)) from None
    except SkillFailed as exc:
        raise _mapped(exc, trace) from None
    return f"skill:{skill.name}", Reply(text, Usage())


async def _no(*_: object) -> str:
    """A command's tool context has no model to call and no channel to send through (a skill's
    SkillContext offers neither)."""
    raise RuntimeError("not available to a skill command")


@dataclass
class StreamEnd:
    """How a relayed stream ended: `error` is None when the model finished. With tools, `stream`
    is the last step's stream and `stopped` says the model still wanted tools after max_steps."""

    error: str | None = None
    timeout: bool = False
    stream: Any = None
    stopped: bool = False


async def relay_with_tools(
    rt: Runtime,
    catalog: Catalog,
    model: str | None,
    messages: list[Message],
    opts: CallOptions,
    trace: Trace,
    priority: int,
    deadline: float,
    end: StreamEnd,
    loop: ToolLoop,
    stream: Any,
) -> AsyncIterator[list[str] | Event]:
    """`relay_deltas` over every step of a tool loop: text batches, and between steps the tool
    events (dicts) as the calls start and end. `stream` is the first step's, opened with
    `loop.options(opts)`. Use it under `contextlib.aclosing`."""
    while True:
        assembler = Assembler()
        async with aclosing(relay_deltas(rt, stream, deadline, end, assembler.pick)) as deltas:
            async for batch in deltas:
                yield batch
        loop.count(stream.usage)
        calls = assembler.take()
        end.stream, end.stopped = stream, bool(calls) and end.error is None
        if end.error is not None or not loop.wants_tools(calls):
            return
        end.stopped = False
        try:
            async with asyncio.timeout_at(deadline):
                async with aclosing(loop.step(stream.text, calls, messages)) as events:
                    async for tool_event in events:
                        yield tool_event
            conversation = [*messages, *loop.added]
            async with in_flight(rt):
                stream = await open_stream(
                    rt, catalog, model, conversation, loop.options(opts), trace, priority, deadline
                )
        except TimeoutError:
            end.error, end.timeout = "the model did not finish within request_timeout_seconds", True
            return
        except ApiError as exc:
            end.error, end.timeout = exc.message, exc.code == "timeout"
            return


def text_deltas(chunks: list[Chunk]) -> list[str]:
    return [chunk.delta for chunk in chunks if chunk.delta]


async def relay_deltas(
    rt: Runtime,
    stream: ModelStream | CompleteStream | RestoringStream,
    deadline: float,
    end: StreamEnd,
    pick: Callable[[list[Chunk]], list[Any]] = text_deltas,
) -> AsyncIterator[list[Any]]:
    """The stream's text pieces (or what `pick` takes of each batch of chunks: the OpenAI endpoint
    takes tool call pieces too), a list of those that arrived together at a time, until it
    finishes, fails or passes `deadline`. The request counts as in flight meanwhile and the stream
    is always closed; a failure stops the pieces and lands in `end`. Use it under
    `contextlib.aclosing`, so a client going away closes the upstream call too."""
    rt.in_flight += 1
    try:
        async with asyncio.timeout_at(deadline):
            async for chunks in stream:
                deltas = pick(chunks)
                if deltas:
                    yield deltas
    except UpstreamError as exc:  # the stream has recorded it against the model already
        end.error = upstream_failure(exc)  # the details are in the engine.model log line
    except TimeoutError:
        end.error, end.timeout = "the model did not finish within request_timeout_seconds", True
        await stream.close(UpstreamError(end.error, retryable=True, timeout=True))
    finally:
        rt.in_flight -= 1
        await stream.close()


class CompleteStream:
    """A reply that is already complete, served through the ModelStream interface (one chunk)."""

    def __init__(self, model: str, reply: Reply) -> None:
        self.model = model
        self.text = reply.text
        self.usage = reply.usage
        self.finish_reason = reply.finish_reason
        self.tool_calls = [{"index": i, **call} for i, call in enumerate(reply.tool_calls)] or None

    async def __aiter__(self) -> AsyncIterator[list[Chunk]]:
        yield [Chunk(self.text, self.usage, self.finish_reason, self.tool_calls)]

    async def close(self, error: UpstreamError | None = None) -> None:
        """Nothing to end: the model call finished (and was recorded) before this existed."""


def _before_model(rt: Runtime) -> Masker | None:
    """The masker that hides PII from the upstream model (security.pii_before_model), or None."""
    return rt.masker if rt.settings.security.pii_before_model else None


def _metered(rt: Runtime, catalog: Catalog, trace: Trace, stream: Any) -> Any:
    """`stream`, charged its tokens when it closes if some token limit is set."""
    if not rt.limits.meters(rt.settings):
        return stream
    return MeteredStream(rt.limits, rt.settings, catalog, trace.user, stream)


def _mapped(exc: Exception, trace: Trace) -> ApiError:
    if isinstance(exc, SkillFailed):
        logs.event(logs.APP, logging.WARNING, str(exc), request_id=trace.request_id, user=trace.user)
        return ApiError(502, "skill_failed", str(exc))
    if isinstance(exc, TimeoutError):
        if trace.model:
            metrics.MODEL_CALLS.labels(trace.model, "timeout").inc()
        return ApiError(504, "timeout", "the model did not answer within request_timeout_seconds")
    if isinstance(exc, NoModelAvailable):
        return ApiError(503, "unavailable", str(exc), {"Retry-After": "1"})
    assert isinstance(exc, AllModelsFailed)
    status = 504 if exc.last.timeout else 502
    # The router's engine.model lines have the whole story (address, upstream's words); not the client.
    return ApiError(status, "upstream_error", f"every model failed; last: {upstream_failure(exc.last)}")
