"""Liveness, readiness and the admin endpoint that switches the default model."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from .. import logs
from ..errors import ApiError
from ..jsonio import JSONResponse
from ..middleware import request_id
from ..models.catalog import UnknownModel
from ..pipeline import runtime
from ..runtime import Runtime
from ..security.auth import is_loopback
from ..settings import WORKERS_STATE_FILE
from .bodies import read_json

_STARTED = time.time()


async def health(request: Request) -> Response:
    """Liveness. A loopback peer (the host's own deploy and facts) also learns which worker answered,
    the sha256 of the settings (and secrets) file it runs, and which ones all the workers run (the
    engine's parent says so once a roll or reload reached every worker: engine/workers.py), so a
    deploy can wait until its settings are live everywhere."""
    body: dict[str, object] = {"status": "ok", "uptime_seconds": round(time.time() - _STARTED, 3)}
    client = request.client
    if is_loopback(client.host if client else None):
        body["pid"] = os.getpid()
        body["settings_sha256"] = runtime(request).settings_digest
        body["secrets_sha256"] = runtime(request).secrets_digest
        body["workers"] = _workers_state(runtime(request))
    return JSONResponse(body)


def _workers_state(rt: Runtime) -> dict | None:
    """What the engine's parent last wrote about its workers (a few bytes on local disk)."""
    try:
        return json.loads((Path(rt.settings.data_dir) / WORKERS_STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None


async def ready(request: Request) -> Response:
    rt = runtime(request)
    catalog = rt.catalog
    checks = {
        "settings": True,
        "storage": await rt.history.ping(),
        "models": catalog.ready(),
    }
    ok = all(checks.values())
    status = 200 if ok else 503
    if not _is_admin(rt, request):  # probes from elsewhere learn the answer, not the deployment's insides
        return JSONResponse({"ready": ok}, status_code=status)
    breakers = {name: entry.breaker.state for name, entry in catalog.entries.items()}
    return JSONResponse(
        {"ready": ok, "checks": checks, "default_model": catalog.default, "breakers": breakers}, status_code=status
    )


def _is_admin(rt: Runtime, request: Request) -> bool:
    try:
        return rt.auth.caller(request).has("admin")
    except ApiError:
        return False


async def set_default_model(request: Request) -> Response:
    rt = runtime(request)
    admin = rt.auth.admin(request)
    request.state.user = admin
    data = await read_json(request, 4096)
    name = data.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "missing_field", "model is required")
    try:
        previous = rt.switch_default(name)
    except UnknownModel:
        raise ApiError(404, "unknown_model", f"no model named {name!r}; see GET /v1/models") from None
    logs.audit("set_default_model", request_id=request_id(request.scope), user=admin, model=name, previous=previous)
    logs.event(logs.APP, logging.INFO, f"default model switched {previous} -> {name} by {admin}")
    return JSONResponse({"default_model": name, "previous": previous})
