"""Errors at the HTTP edge: every failure becomes one JSON body and the right status.

keel's routes answer ``{"error": code, "message", "hint"}`` with the
``KeelError``'s ``http_status``. The OpenAI-compatible routes (``/v1/chat/...``,
``/v1/models``) answer in OpenAI's shape, ``{"error": {"message", "type",
"code", "param"}}``, so OpenAI's clients raise their usual exceptions.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BudgetExceeded, CircuitOpen, KeelError, RateLimited, RateLimitExceeded, Unauthorized

__all__ = ["error_body", "error_response", "install_handlers", "retry_after"]

log = logging.getLogger("keel.server")

_OPENAI_PATHS = ("/v1/chat/", "/v1/models")

_HTTP_CODES = {
    400: ("bad_request", "the request could not be read", "send a JSON body with Content-Type: application/json"),
    404: ("not_found", "no such endpoint", "see /openapi.json for the endpoints"),
    405: ("method_not_allowed", "this endpoint does not take that method", "see /openapi.json for the endpoints"),
    413: ("payload_too_large", "the request body is too large", "send less, or raise server.max_body_kb"),
}


def is_openai_path(path: str) -> bool:
    return path.startswith(_OPENAI_PATHS)


def error_body(path: str, code: str, message: str, hint: str | None, **extra: Any) -> dict[str, Any]:
    """keel's error body, or OpenAI's for the OpenAI-compatible routes."""
    if is_openai_path(path):
        return {"error": {"message": message, "type": code, "code": code, "param": None, "hint": hint, **extra}}
    return {"error": code, "message": message, "hint": hint, **extra}


def retry_after(exc: KeelError) -> int | None:
    """Seconds a client should wait before retrying, when the error knows."""
    if isinstance(exc, RateLimitExceeded):
        return max(1, math.ceil(exc.retry_after))
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return max(1, math.ceil(exc.retry_after))
    if isinstance(exc, CircuitOpen):
        return max(1, math.ceil(exc.retry_in))
    if isinstance(exc, BudgetExceeded) and exc.resets_at:
        try:
            resets = dt.datetime.fromisoformat(exc.resets_at.replace("Z", "+00:00"))
        except ValueError:
            return None
        if resets.tzinfo is None:
            resets = resets.replace(tzinfo=dt.UTC)
        return max(1, math.ceil((resets - dt.datetime.now(dt.UTC)).total_seconds()))
    return None


def error_response(request: Request, exc: KeelError, **extra: Any) -> JSONResponse:
    headers: dict[str, str] = {}
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = str(wait)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(request.url.path, exc.code, exc.message, exc.hint, **extra)
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def install_handlers(api: FastAPI) -> None:
    @api.exception_handler(KeelError)
    async def _keel_error(request: Request, exc: KeelError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.http_status, exc)
        return error_response(request, exc)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = error_body(
            request.url.path,
            "input_error",
            f"the request is not valid: {_validation_message(exc)}",
            "see /openapi.json for the request's schema",
        )
        return JSONResponse(body, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, message, hint = _HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail), None))
        if exc.status_code not in (404, 405) and isinstance(exc.detail, str) and exc.detail:
            message = exc.detail
        body = error_body(request.url.path, code, message, hint)
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get("keel.request_id", "-")
        log.exception("unexpected error in %s %s (request %s)", request.method, request.url.path, rid)
        body = error_body(
            request.url.path,
            "internal_error",
            f"the server failed: {type(exc).__name__}",
            f"see the server log for request {rid}; KEEL_RAISE_ERRORS=1 shows the traceback",
        )
        return JSONResponse(body, status_code=500)
