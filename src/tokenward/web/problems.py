"""RFC 9457 problem details, and the mapping from tokenward errors to HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from tokenward.exceptions import TokenError, TokenwardError, UnavailableError
from tokenward.infra.logs import current_request

__all__ = [
    "PROBLEM_JSON",
    "error_response",
    "install_problem_handlers",
    "problem",
    "problem_body",
]

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("tokenward")

# Stable problem types: clients branch on these, never on the human-readable text.
_TYPE = "urn:tokenward:problem:"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, code, title, detail, **extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_body(
    status: int, code: str, title: str, detail: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The RFC 9457 document: ``type`` is the stable ``urn:tokenward:problem:<code>``, and
    ``request_id`` (an extension member) the id of the request's log lines, for support."""
    body: dict[str, Any] = {"type": _TYPE + code, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    if (request := current_request()) is not None:
        body["request_id"] = request.request_id
    return body


def error_response(
    exc: TokenwardError, *, detail: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The problem+json answer of any tokenward error, from the data on its class; ``detail``
    and ``headers`` are the endpoint's words for it, where it has its own."""
    if isinstance(exc, TokenError):
        # One answer for every reason (no oracle); the kind goes to the log, never the client.
        _log.info("token refused: %s", type(exc).__name__)
    elif isinstance(exc, UnavailableError):
        _log.warning("%s", exc)  # which dependency and why: for the operator only
    elif exc.status >= 500:
        _log.error("%s: %s", exc.problem, type(exc).__name__)
    return problem(
        exc.status,
        exc.problem,
        exc.title,
        detail or exc.public_detail(),
        headers={**exc.headers(), **(headers or {})},
        **exc.extra(),
    )


def internal_error() -> JSONResponse:
    """The one answer to an error nothing handled (what it was goes to the log only)."""
    return problem(500, "internal-error", "Internal server error")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic's errors carry the offending input; a password must never be echoed back.
    return [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": error.get("msg", "")}
        for error in exc.errors()
    ]


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route of ``app`` answers on the path of ``scope``."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(
            422,
            "invalid-request",
            "Invalid request",
            "the request body does not match the schema",
            errors=_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; one path may
            # have several routes (POST and DELETE /auth/email): name them all.
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        code = {
            401: "invalid-token",
            403: "cross-origin-request",
            404: "not-found",
            405: "method-not-allowed",
        }.get(exc.status_code, "http-error")
        return problem(
            exc.status_code,
            code,
            str(exc.detail) if isinstance(exc.detail, str) else "Error",
            headers=headers,
        )

    @app.exception_handler(TokenwardError)
    async def _tokenward_error(_: Request, exc: TokenwardError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        _log.error("unhandled error: %s", type(exc).__name__)
        return internal_error()
