"""RFC 9457 problem details, and the mapping from tokenward errors to HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenward.exceptions import (
    AuthenticationError,
    EmailTakenError,
    InvalidEmailError,
    PasswordPolicyError,
    RateLimitedError,
    TokenError,
    UnavailableError,
)

__all__ = ["PROBLEM_JSON", "install_problem_handlers", "problem"]

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_UNAVAILABLE = 2
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
    body: dict[str, Any] = {"type": _TYPE + code, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic's errors carry the offending input; a password must never be echoed back.
    return [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": error.get("msg", "")}
        for error in exc.errors()
    ]


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
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
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
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(InvalidEmailError)
    async def _bad_email(_: Request, exc: InvalidEmailError) -> JSONResponse:
        return problem(422, "invalid-email", "Invalid email", str(exc), rule="email_invalid")

    @app.exception_handler(PasswordPolicyError)
    async def _weak_password(_: Request, exc: PasswordPolicyError) -> JSONResponse:
        return problem(422, "weak-password", "Password rejected", str(exc), rule=exc.rule)

    @app.exception_handler(EmailTakenError)
    async def _taken(_: Request, exc: EmailTakenError) -> JSONResponse:
        return problem(409, "email-taken", "Email already registered", str(exc))

    @app.exception_handler(AuthenticationError)
    async def _bad_credentials(_: Request, _exc: AuthenticationError) -> JSONResponse:
        return problem(
            401, "invalid-credentials", "Invalid credentials", "email or password is incorrect"
        )

    @app.exception_handler(TokenError)
    async def _bad_token(_: Request, exc: TokenError) -> JSONResponse:
        # One answer for every reason (no oracle); the reason goes to the log, never the client.
        _log.info("refresh token refused: %s", type(exc).__name__)
        return problem(401, "invalid-token", "Invalid token", "the token is invalid or has expired")

    @app.exception_handler(RateLimitedError)
    async def _too_many(_: Request, exc: RateLimitedError) -> JSONResponse:
        return problem(
            429,
            "rate-limited",
            "Too many requests",
            f"try again in {exc.retry_after} seconds",
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(UnavailableError)
    async def _unavailable(_: Request, exc: UnavailableError) -> JSONResponse:
        # Which dependency and why goes to the log; the client learns only when to come back.
        _log.warning("%s", exc)
        return problem(
            503,
            "unavailable",
            "Service unavailable",
            "tokenward cannot reach its storage right now; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        _log.error("unhandled error: %s", type(exc).__name__)
        return problem(500, "internal-error", "Internal server error")
