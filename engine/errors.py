"""Errors a client can act on, always answered as JSON `{"error": {"code", "message"}}`.

A message is for the client, so it never carries what only the operator should see: an upstream's
own words or its internal address stay in the log (`upstream_failure` says what a client may know).
"""

from __future__ import annotations

from starlette.requests import Request

from .jsonio import JSONResponse
from .models.adapters.base import UpstreamError

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (404, 405 ...), with their headers: a 405 must say `Allow`."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    return error_response(status, _HTTP_CODES.get(status, "http_error"), str(detail), getattr(exc, "headers", None))


def upstream_failure(exc: UpstreamError) -> str:
    """What a client may learn of a failed model call: its kind, never the upstream's words or
    address (a connection error names host:port; an error body can name anything)."""
    if exc.timeout:
        return "the model did not answer in time"
    if exc.status is not None:
        return f"the model answered HTTP {exc.status}"
    return "the model call failed (the engine log has the details)"
