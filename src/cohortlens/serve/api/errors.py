"""Errors as JSON: ``{"error", "message", "field"?}`` for every failure, never a stack trace.

:func:`install_error_handlers` maps the library's exceptions to status codes; :func:`responses`
documents the codes a route can answer in the OpenAPI document.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cohortlens.errors import CohortlensError, InputError, StoreError
from cohortlens.serve import schemas as s
from cohortlens.serve.api.auth import AuthError
from cohortlens.serve.service import (
    NotFoundError,
    StateConflictError,
    UnavailableError,
    error_body,
)
from cohortlens.store.base import StoreBusyError

log = logging.getLogger("cohortlens.serve")

_TEXT = {
    401: "Missing or wrong credentials",
    403: "Admin routes are disabled",
    404: "Not found",
    409: "Routing changed since expected_revision",
    413: "Body too large",
    415: "Unsupported content type",
    422: "Malformed input (the field is named)",
    503: "Not ready (no active model, or the store is unreachable)",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of these error codes (all with :class:`ErrorBody`)."""
    return {c: {"model": s.ErrorBody, "description": _TEXT[c]} for c in codes}


def json_error(status: int, code: str, message: str, field: str | None = None) -> Response:
    """An error response with the shared body."""
    return Response(
        error_body(code, message, field=field), status_code=status, media_type="application/json"
    )


def validation_response(errors: Any, prefix: tuple[str, ...] = ()) -> Response:
    """422 naming the first offending field (``body.features.3.velocity``), up to 20 listed."""
    items = [
        {
            "field": ".".join(str(p) for p in (*prefix, *e.get("loc", ()))),
            "message": str(e.get("msg", "invalid")),
        }
        for e in errors
    ]
    first = items[0] if items else {"field": "body", "message": "invalid request"}
    body = {
        "error": "invalid_request",
        "message": f"{first['field']}: {first['message']}",
        "field": first["field"],
        "errors": items[:20],
    }
    return JSONResponse(body, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register the exception-to-response mapping on ``app``."""

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> Response:
        resp = json_error(401, "unauthorized", exc.message)
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": malformed JSON
            return json_error(422, "invalid_request", f"body: {exc.detail}", "body")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        resp = json_error(exc.status_code, code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            resp.headers[key] = value
        return resp

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return json_error(500, "internal", "internal server error")

    @app.exception_handler(StateConflictError)
    async def _conflict(_: Request, exc: StateConflictError) -> Response:
        return json_error(409, "conflict", str(exc))

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> Response:
        return json_error(404, "not_found", str(exc))

    @app.exception_handler(UnavailableError)
    async def _unavailable(_: Request, exc: UnavailableError) -> Response:
        return json_error(503, "unavailable", str(exc))

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> Response:
        return json_error(422, "invalid_request", str(exc), getattr(exc, "field", None))

    @app.exception_handler(StoreBusyError)
    async def _busy(_: Request, exc: StoreBusyError) -> Response:
        resp = json_error(503, "store_busy", str(exc))
        resp.headers["Retry-After"] = "5"
        return resp

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> Response:
        if type(exc).__name__ == "ConflictError":
            return json_error(409, "conflict", str(exc))
        return json_error(503, "store_error", str(exc))

    @app.exception_handler(CohortlensError)
    async def _cohortlens(_: Request, exc: CohortlensError) -> Response:
        return json_error(422, "invalid_request", str(exc))
