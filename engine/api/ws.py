"""The websocket channel for mobile clients: JSON text frames, message ids, heartbeats, resume.

Served at the websocket channel's `path` (`/ws` by default) when the settings list that channel.
The user is decided as for the REST API (engine/security/auth.py): an API key or JWT in Authorization:
Bearer (or, from a browser, the subprotocol `bearer.<key>` next to `assistant.v1`), else the one
anonymous user where the settings allow it; a `user` query parameter may only name the caller.
A refused handshake is an HTTP 401/403/400 with the REST API's JSON error body. A browser page of
another site is refused before that (403 `forbidden_origin`, engine/cors.py: websocket_origin_allowed).
See docs/websocket.md for the whole protocol.

Client -> server
  {"type": "chat", "id": "<client message id>", "message": "...", "conversation_id": "..."?,
   "model": "..."?, "priority": 0-9?}
  {"type": "resume", "last_id": "<client message id>" | null}
  {"type": "cancel", "id": "<client message id>"}   stop that reply: the model call is cancelled,
                                    nothing is stored, followers get `cancelled`
  {"type": "approval", "approval_id": "...", "approve": true|false}
                                    the user's answer to an approval_request (any worker may get it)
  {"type": "pong"}                  answer to every server ping (any frame counts as a sign of life)
  {"type": "ping"}                  optional; the server answers {"type": "pong", "ts": ...}
Server -> client
  {"type": "chunk", "id": ..., "seq": n, "delta": "..."}        n = 0, 1, 2 ... per id
  {"type": "tool", "id": ..., "event": "started"|"finished"|"failed", "call_id": ..., "name": ...,
   "outcome": ..., "duration_ms": ..., "preview": "..."}          the engine ran a tool (not on replay)
  {"type": "approval_request", "id": ..., "approval_id": ..., "tool": ..., "arguments": {...},
   "timeout_seconds": ..., "text": "Run ...? Reply yes or no"}    a machine tool waits for the user's
                                                                  yes (engine/tools/approval.py); no
                                                                  answer in time counts as a no
  {"type": "done", "id": ..., "reply": "...", "conversation_id": ..., "message_id": ...,
   "model": ..., "replayed": bool}
  {"type": "cancelled", "id": ...}                               the reply was stopped by a cancel
  {"type": "error", "id": ... | null, "code": "...", "message": "..."}
  {"type": "resumed", "last_id": ..., "count": n}                after a resume's replayed `done`s
  {"type": "ping", "ts": <unix seconds>}                          every heartbeat_seconds

Ids are idempotency keys per user: re-sending an id (after a reconnect, even to another worker)
never calls the model again; it follows the reply still being generated (chunks from seq 0, then
`done`) or gets the stored reply as a `done` frame with `replayed: true`. A connection that sends
nothing for `_MISSED_HEARTBEATS` heartbeats is closed with code 4408. uvicorn also sends
WebSocket protocol pings (its ws_ping_interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import cors, logs, metrics
from ..errors import ApiError, error_response
from ..jsonio import RefusedJson, loads
from ..pipeline import check_model
from ..runtime import Runtime
from ..settings import ChannelSettings, EngineSettings
from ..tools.approval import store_for
from .bodies import chat_request
from .replies import FOLLOW_FRAMES, Frame, Job, Replies, done_frame, error_frame

CHANNEL = "websocket"
DEFAULT_PATH = "/ws"
DEFAULT_HEARTBEAT_SECONDS = 30.0
HEARTBEAT_MISSED_CLOSE_CODE = 4408
# The same count nginx allows before it drops a silent websocket (renderers/nginx.py).
_MISSED_HEARTBEATS = 3
_RESUME_LIMIT = 500
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Browsers authenticate with subprotocols (see _with_bearer): the one echoed, and the key's prefix.
_PROTOCOL = "assistant.v1"
_BEARER = "bearer."


def channel(settings: EngineSettings) -> ChannelSettings | None:
    """The websocket channel's settings, or None when the spec does not enable it."""
    return next((c for c in settings.channels if c.name == CHANNEL), None)


def path(settings: EngineSettings) -> str | None:
    found = channel(settings)
    return (found.path or DEFAULT_PATH) if found else None


async def endpoint(websocket: WebSocket) -> None:
    rt: Runtime = websocket.app.state.runtime
    replies: Replies = websocket.app.state.replies
    settings = channel(rt.settings) or ChannelSettings(name=CHANNEL)
    try:
        user = _admit(websocket, rt, settings)
    except ApiError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept(subprotocol=_PROTOCOL if _PROTOCOL in websocket.scope.get("subprotocols", ()) else None)
    metrics.WEBSOCKET_CONNECTIONS.inc()
    started = time.perf_counter()
    connection = Connection(websocket, rt, replies, user, settings)
    try:
        await connection.run()
    finally:
        metrics.WEBSOCKET_CONNECTIONS.dec()
        logs.event(
            logs.ACCESS,
            logging.INFO,
            request_id=connection.request_id,
            user=user,
            method="WS",
            route=websocket.url.path,
            status=connection.close_code,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


def _admit(websocket: WebSocket, rt: Runtime, settings: ChannelSettings) -> str:
    headers = websocket.headers
    if not cors.websocket_origin_allowed(
        rt.settings, headers.get("origin"), [headers.get("host"), headers.get("x-forwarded-host")]
    ):
        raise ApiError(403, "forbidden_origin", "a page of this origin may not open this websocket")
    user = rt.auth.user(_with_bearer(websocket), websocket.query_params.get("user") or None)  # type: ignore[arg-type]
    if settings.allowed_users and user not in settings.allowed_users:
        raise ApiError(403, "forbidden", "this user may not use the websocket channel")
    return user


def _with_bearer(websocket: WebSocket) -> HTTPConnection:
    """The handshake as auth sees it. A browser cannot set Authorization on a websocket, so its
    page offers the key as a subprotocol, `bearer.<key>`, next to `assistant.v1`; it becomes the
    Authorization header here (only when there is none) and is never echoed back: the handshake
    answers `assistant.v1`. Headers are not logged, by the engine or by nginx."""
    offered = [p for p in websocket.scope.get("subprotocols", ()) if p.startswith(_BEARER)]
    if not offered or "authorization" in websocket.headers:
        return websocket
    token = offered[0][len(_BEARER) :].encode("latin-1", "replace")
    headers = [*websocket.scope["headers"], (b"authorization", b"Bearer " + token)]
    return HTTPConnection({**websocket.scope, "headers": headers})


async def _deny(websocket: WebSocket, exc: ApiError) -> None:
    try:
        await websocket.send_denial_response(error_response(exc.status, exc.code, exc.message, exc.headers))
    except RuntimeError:  # a server without the denial extension: a bare 403
        await websocket.close(code=1008, reason=exc.code)


class Connection:
    """One accepted websocket: a reader, a heartbeat, and one forwarding task per followed id."""

    def __init__(self, websocket: WebSocket, rt: Runtime, replies: Replies, user: str, settings: ChannelSettings):
        self.websocket = websocket
        self.rt = rt
        self.replies = replies
        self.user = user
        self.heartbeat = settings.heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS
        self.model = settings.model
        self.request_id = os.urandom(8).hex()
        self.close_code = 1000
        self.last_seen = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._following: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        beat = asyncio.create_task(self._beat())
        try:
            done, _ = await asyncio.wait({reader, beat}, return_when=asyncio.FIRST_COMPLETED)
            if beat in done and not beat.cancelled() and beat.exception() is None:
                self.close_code = HEARTBEAT_MISSED_CLOSE_CODE
                await self._close(HEARTBEAT_MISSED_CLOSE_CODE, "missed heartbeats")
        finally:
            tasks = [reader, beat, *self._tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def send(self, frame: Frame) -> None:
        text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
        async with self._send_lock:
            await self.websocket.send_text(text)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.websocket.close(code=code, reason=reason)
        except (RuntimeError, OSError):
            pass  # already closed by the client

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code", 1000)
                return
            self.last_seen = time.monotonic()
            try:
                await self._dispatch(message.get("text"))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return

    async def _beat(self) -> None:
        """Ping every heartbeat; return (which closes the connection) after too long a silence."""
        while True:
            await asyncio.sleep(self.heartbeat)
            if time.monotonic() - self.last_seen > self.heartbeat * _MISSED_HEARTBEATS:
                return
            try:
                await self.send({"type": "ping", "ts": round(time.time(), 3)})
            except (WebSocketDisconnect, RuntimeError, OSError):
                await asyncio.sleep(self.heartbeat)  # the reader sees the disconnect and ends the run

    async def _dispatch(self, text: str | None) -> None:
        if text is None:
            await self.send(error_frame(None, "invalid_frame", "frames must be JSON text, not binary"))
            return
        try:
            frame = loads(text)
        except RefusedJson as exc:  # too deep, or text with a lone surrogate
            await self.send(error_frame(_refused_frame_id(text, exc), exc.code, str(exc)))
            return
        except ValueError:
            await self.send(error_frame(None, "invalid_json", "the frame is not valid JSON"))
            return
        if not isinstance(frame, dict):
            await self.send(error_frame(None, "invalid_frame", "a frame must be a JSON object"))
            return
        kind = frame.get("type")
        if kind == "pong":
            return
        if kind == "ping":
            await self.send({"type": "pong", "ts": round(time.time(), 3)})
        elif kind == "chat":
            await self._chat(frame)
        elif kind == "resume":
            self._spawn(self._resume(frame), _frame_id(frame))
        elif kind == "approval":
            await self._approval(frame)
        elif kind == "cancel":
            await self._cancel(_frame_id(frame))
        else:
            await self.send(
                error_frame(
                    _frame_id(frame), "unknown_type", "type must be chat, cancel, approval, resume, ping or pong"
                )
            )

    async def _cancel(self, client_id: str | None) -> None:
        """Stop the reply to `client_id` that this worker generates: its `cancelled` frame reaches
        every follower. A reply generated on another worker cannot be reached from here."""
        if client_id is None or not self.replies.cancel(self.user, client_id):
            await self.send(error_frame(client_id, "unknown_id", "no reply of yours with this id is running here"))

    async def _approval(self, frame: dict[str, Any]) -> None:
        """The user's answer to an approval_request, written where the waiting request (on this
        worker or another) reads it."""
        question_id, approve = frame.get("approval_id"), frame.get("approve")
        if not isinstance(question_id, str) or not isinstance(approve, bool):
            await self.send(
                error_frame(
                    _frame_id(frame), "invalid_field", "an approval needs approval_id (string) and approve (bool)"
                )
            )
            return
        store = store_for(Path(self.rt.settings.data_dir))
        if not await store.answer(question_id, self.user, approve):
            await self.send(
                error_frame(_frame_id(frame), "unknown_approval", "no open question with this approval_id for you")
            )

    async def _chat(self, frame: dict[str, Any]) -> None:
        client_id = frame.get("id")
        if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
            await self.send(error_frame(None, "invalid_id", "id must be 1-128 letters, digits or . _ : -"))
            return
        if client_id in self._following:
            return  # already being answered on this connection: its `done` comes once
        try:
            req = chat_request(frame, self.rt.settings.max_message_chars)
            check_model(self.rt.catalog, req.model)
            await self._limit(req.model or self.model)
        except ApiError as exc:
            await self.send(error_frame(client_id, exc.code, exc.message, **_retry_after(exc)))
            return
        job = self.replies.answer(self.rt, self.user, client_id, req, req.model or self.model)
        self._following[client_id] = self._spawn(self._forward(job), client_id)

    async def _limit(self, model: str | None) -> None:
        """The REST API's limits (engine/limits/policy.py) for one chat frame; raises the 429 ApiError."""
        rt, client = self.rt, self.websocket.client
        key = self.user if rt.settings.rate_limit.key == "user" else (client.host if client else "-")
        entry = rt.catalog.entries.get(model or rt.catalog.default)
        refusal = await rt.limits.admit(
            rt.settings, self.user, key, entry.settings if entry else None, self.websocket.url.path
        )
        if refusal is not None:
            raise refusal.error()

    async def _forward(self, job: Job) -> None:
        queue = job.follow()
        try:
            while True:
                frame = await queue.get()
                await self.send(frame)
                if frame["type"] not in FOLLOW_FRAMES:
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client left; the job goes on and stores the reply
        finally:
            job.unfollow(queue)
            self._following.pop(job.client_id, None)

    async def _resume(self, frame: dict[str, Any]) -> None:
        last_id, frame_id = frame.get("last_id"), _frame_id(frame)
        if last_id is not None and not isinstance(last_id, str):
            await self.send(error_frame(frame_id, "invalid_field", "last_id must be a string or null"))
            return
        store = self.rt.history.client_messages
        records = await store.answered_after(self.user, last_id, _RESUME_LIMIT)
        if records is None:
            # Without an id of its own, the resume's error names the id the engine does not know.
            await self.send(error_frame(frame_id or last_id, "unknown_id", "no message with this id for this user"))
            return
        for record in records:
            await self.send(done_frame(record.client_id, record, replayed=True))
        await self.send({"type": "resumed", "last_id": last_id, "count": len(records)})

    def _spawn(self, coro: Any, client_id: str | None = None) -> asyncio.Task[None]:
        """Run one frame's work beside the reader; an unexpected failure answers `client_id`."""
        task = asyncio.create_task(self._guard(coro, client_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, coro: Any, client_id: str | None) -> None:
        try:
            await coro
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left while we were sending
        except Exception:  # noqa: BLE001 - one frame's failure must not end the connection silently
            logs.APP.exception("websocket frame failed", extra={"fields": {"user": self.user}})
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.send(error_frame(client_id, "internal", "internal error, see the engine log"))


def _frame_id(frame: dict[str, Any]) -> str | None:
    """The frame's `id` when it is a usable client message id, for the error frames it causes."""
    found = frame.get("id")
    return found if isinstance(found, str) and _CLIENT_ID.match(found) else None


def _refused_frame_id(text: str, exc: RefusedJson) -> str | None:
    """The id of a frame refused for a lone surrogate: it parses (the standard library keeps such
    text), so the client learns which message to fix. A frame too deep is never parsed."""
    if exc.code != "invalid_text":
        return None
    with contextlib.suppress(ValueError):
        frame = json.loads(text)
        return _frame_id(frame) if isinstance(frame, dict) else None
    return None


def _retry_after(exc: ApiError) -> dict[str, int]:
    wait = exc.headers.get("Retry-After")
    return {"retry_after": int(wait)} if wait else {}
