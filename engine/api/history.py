"""The history's life cycle through the API: list and delete conversations, delete everything of
one user, and (admin) the state of the key rotation.

A user reaches their own history; an admin anyone's (a channel user such as `telegram:123`
included). Deletions are audited.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import logs
from ..errors import ApiError
from ..history.retention import key_status
from ..jsonio import JSONResponse
from ..middleware import request_id
from ..pipeline import admit, runtime
from ..runtime import Runtime
from ..security.auth import VALID_USER

_MAX_PAGE = 200


async def whose(request: Request, rt: Runtime, named: str | None) -> str:
    """The user whose history this request reaches: the caller's own, or, for an admin, the one
    `named`; raises 403 when someone else's is asked for by a non-admin."""
    caller = await admit(request, rt, None, "history")
    if named is None or named == caller:
        return caller
    if not VALID_USER.match(named):
        raise ApiError(400, "invalid_user", "user must be 1-128 letters, digits or . @ + : - _")
    rt.auth.admin(request)
    return named


def _page_size(request: Request, default: int = 50) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_PAGE:
        raise ApiError(400, "invalid_param", f"limit must be an integer from 1 to {_MAX_PAGE}")
    return int(raw)


async def list_conversations(request: Request) -> Response:
    rt = runtime(request)
    user = await whose(request, rt, request.query_params.get("user") or None)
    limit = _page_size(request)
    items, next_before = await rt.history.lifecycle.conversations(
        user, limit, request.query_params.get("before") or None
    )
    return JSONResponse({"user": user, "conversations": items, "next_before": next_before})


async def delete_conversation(request: Request) -> Response:
    rt = runtime(request)
    user = await whose(request, rt, None)
    conversation_id = request.path_params["conversation_id"]
    deleted = await rt.history.lifecycle.delete_conversation(conversation_id, user)
    if deleted is None:
        raise ApiError(404, "unknown_conversation", "no such conversation for this user")
    logs.audit(
        "delete_conversation",
        request_id=request_id(request.scope),
        user=user,
        conversation_id=conversation_id,
        messages=deleted,
    )
    return JSONResponse({"conversation_id": conversation_id, "deleted_messages": deleted})


async def delete_user_history(request: Request) -> Response:
    rt = runtime(request)
    target = request.path_params["user"]
    user = await whose(request, rt, target)
    deleted = await rt.history.lifecycle.delete_user(user)
    logs.audit(
        "delete_user_history",
        request_id=request_id(request.scope),
        user=request.state.user,
        target=user,
        messages=deleted,
    )
    return JSONResponse({"user": user, "deleted_messages": deleted})


async def history_keys(request: Request) -> Response:
    rt = runtime(request)
    request.state.user = rt.auth.admin(request)
    return JSONResponse(await key_status(rt.history.lifecycle, rt.history_keys))
