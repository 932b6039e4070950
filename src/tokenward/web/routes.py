"""The /auth endpoints, the JWKS and the health check."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import cookie_parser

from tokenward.app.service import AuthService, IssuedTokens
from tokenward.app.sessions import MfaPending
from tokenward.core.events import ClientInfo
from tokenward.core.mfa import MfaMethod, MfaMode
from tokenward.core.roles import Grants
from tokenward.core.users import User
from tokenward.exceptions import (
    AuthenticationError,
    EmailNotVerifiedError,
    InvalidEmailError,
    InvalidMetadataError,
    MfaFailedError,
    PasswordPolicyError,
    TokenError,
)
from tokenward.infra.config import Settings
from tokenward.infra.logs import note_identity
from tokenward.web.deps import (
    NO_STORE,
    Client,
    CurrentUser,
    SameOrigin,
    Service,
)
from tokenward.web.openapi import (
    BEARER,
    BODY,
    CROSS_ORIGIN,
    EMAIL_TAKEN,
    GUARDED,
    LOGIN_REFUSED,
    RATE_LIMITED,
    TOKEN_REQUEST_BODY,
    UNAVAILABLE,
    WRONG_PASSWORD,
    problem_response,
    unprocessable,
)
from tokenward.web.problems import error_response
from tokenward.web.schemas import (
    ACCEPTED,
    Credentials,
    JWKSet,
    MfaRequired,
    MfaRequiredError,
    OAuthError,
    OAuthTokenResponse,
    ProfilePatch,
    Readiness,
    TokenResponse,
    UserResponse,
    accepted,
)

__all__ = ["MFA_GRANT", "mfa_required_body", "refresh_answer", "router", "user_body"]

router = APIRouter()
_log = logging.getLogger("tokenward")
MFA_GRANT = "urn:tokenward:params:oauth:grant-type:mfa"
"""The token endpoint's extension grant (RFC 6749 4.5) that completes a pending sign-in."""


def cookie_path(request: Request, settings: Settings) -> str:
    """``/auth``, below the mount point when tokenward is embedded in another app; ``/`` for
    a ``__Host-`` cookie, which browsers take with no other path."""
    if settings.cookie_host_prefix:
        return "/"
    root_path: str = request.scope.get("root_path", "")
    return root_path.rstrip("/") + "/auth"


def refresh_cookie(request: Request, settings: Settings) -> str | None:
    """The refresh token of the request's one refresh cookie; None if none, or if several.

    Another host of the site (a sibling subdomain) can plant a second cookie of the same name
    for a wider Domain or a narrower Path, and the browser sends both in an order it chooses;
    picking either could run the visitor on the planted session. So two are no cookie at all,
    counted across every Cookie header (Starlette's ``request.cookies`` reads the first header
    only and keeps the last of a name). A ``__Host-`` name cannot be planted that way.
    """
    name = settings.refresh_cookie_name
    values = [
        value
        for header in request.headers.getlist("cookie")
        for pair in header.split(";")
        for key, value in cookie_parser(pair).items()
        if key == name
    ]
    if len(values) > 1:
        _log.info("refresh cookie sent %d times: ignored (planted by another host?)", len(values))
    return values[0] if len(values) == 1 else None


def token_response(request: Request, service: AuthService, issued: IssuedTokens) -> JSONResponse:
    note_identity(issued.user_id, issued.session_id)
    body = TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)
    response = JSONResponse(body.model_dump(), headers=NO_STORE)
    settings = service.settings
    response.set_cookie(
        settings.refresh_cookie_name,
        issued.refresh_token,
        max_age=issued.refresh_expires_in,
        path=cookie_path(request, settings),
        secure=settings.secure_cookie,
        httponly=True,
        samesite=settings.cookie_samesite,
    )
    return response


def clear_cookie(request: Request, service: AuthService, response: Response) -> None:
    settings = service.settings
    response.delete_cookie(
        settings.refresh_cookie_name,
        path=cookie_path(request, settings),
        secure=settings.secure_cookie,
        httponly=True,
        samesite=settings.cookie_samesite,
    )


@router.post(
    "/auth/register",
    status_code=201,
    response_model=UserResponse,
    responses={
        **BODY,
        **ACCEPTED,
        **EMAIL_TAKEN,
        **unprocessable(InvalidEmailError.problem, PasswordPolicyError.problem),
        **RATE_LIMITED,
        **UNAVAILABLE,
    },
)
async def register(body: Credentials, service: Service, client: Client) -> Response:
    if service.settings.email_verification == "required":
        # One answer for a new and a taken address (docs/email.md).
        await service.accounts.register_blind(body.email, body.password, client)
        return accepted()
    user = await service.accounts.register(body.email, body.password, client)
    grants = await service.roles.grants(user.id)  # the default roles
    return JSONResponse(user_body(user, grants).model_dump(mode="json"), status_code=201)


def mfa_required_body(pending: MfaPending) -> dict[str, Any]:
    return MfaRequired(
        mfa_token=pending.mfa_token,
        methods=[m.value for m in pending.methods],
        expires_in=pending.expires_in,
        enrollment_required=pending.enrollment_required,
    ).model_dump()


@router.post(
    "/auth/login",
    response_model=TokenResponse | MfaRequired,
    responses={
        **BODY,
        **WRONG_PASSWORD,
        **LOGIN_REFUSED,
        **unprocessable(PasswordPolicyError.problem),
        **RATE_LIMITED,
        **UNAVAILABLE,
    },
    dependencies=[SameOrigin],
)
async def login(
    request: Request, body: Credentials, service: Service, client: Client
) -> JSONResponse:
    """Sign in: tokens, or (a user with a second factor) a pending sign-in: no token and no
    cookie until POST /auth/mfa/verify."""
    issued = await service.sessions.login(body.email, body.password, client)
    if isinstance(issued, MfaPending):
        return JSONResponse(mfa_required_body(issued), headers=NO_STORE)
    return token_response(request, service, issued)


@router.post(
    "/auth/refresh",
    response_model=TokenResponse,
    responses={
        **GUARDED,
        401: problem_response(
            401,
            "The refresh cookie is missing, sent twice, invalid, expired or revoked (and is "
            "cleared).",
            "invalid-token",
        ),
        **CROSS_ORIGIN,
        **RATE_LIMITED,
        **UNAVAILABLE,
    },
    dependencies=[SameOrigin],
)
async def refresh(request: Request, service: Service, client: Client) -> Response:
    return await refresh_answer(request, service, client)


async def refresh_answer(request: Request, service: AuthService, client: ClientInfo) -> Response:
    """The refresh endpoint's answer, once the CSRF check passed: the route's and the fast
    path's (web.fastpath) alike. Other tokenward errors propagate to the one error handler."""
    token = refresh_cookie(request, service.settings)
    try:
        if not token:
            raise TokenError("no refresh cookie")
        issued = await service.sessions.refresh(token, client)
    except TokenError as refused:
        response = error_response(
            refused,
            detail="the refresh token is missing, invalid, expired or revoked",
            headers=NO_STORE,
        )
        clear_cookie(request, service, response)
        return response
    return token_response(request, service, issued)


@router.post(
    "/auth/logout",
    status_code=204,
    responses={**GUARDED, **CROSS_ORIGIN, **UNAVAILABLE},
    dependencies=[SameOrigin],
)
async def logout(request: Request, service: Service, client: Client) -> Response:
    token = refresh_cookie(request, service.settings)  # two: ambiguous, so none is ended
    if token:
        await service.sessions.logout(token, client)
    response = Response(status_code=204)
    clear_cookie(request, service, response)
    return response


def user_body(user: User, grants: Grants) -> UserResponse:
    """The user as GET /auth/me (and its fast path) and a registration show it."""
    return UserResponse(
        id=user.id,
        email=user.email,
        created_at=user.created_at,
        email_verified=user.email_verified,
        roles=list(grants.roles),
        scope=grants.scope,
        app_metadata=dict(user.app_metadata),
        user_metadata=dict(user.user_metadata),
    )


@router.get("/auth/me", response_model=UserResponse, responses={**BEARER, **UNAVAILABLE})
async def me(principal: CurrentUser) -> UserResponse:
    """The signed-in user, with the roles and permissions they hold now (a change shows here
    at once, in access tokens from the next refresh)."""
    return user_body(principal.user, principal.grants)


@router.patch(
    "/auth/me",
    response_model=UserResponse,
    responses={
        **BODY,
        **BEARER,
        **unprocessable(InvalidMetadataError.problem),
        **RATE_LIMITED,
        **UNAVAILABLE,
    },
)
async def update_me(
    body: ProfilePatch, principal: CurrentUser, service: Service, client: Client
) -> UserResponse:
    """Edit your own ``user_metadata`` (a JSON Merge Patch; at most 4 KiB once merged).
    Never trusted for authorization: roles and app_metadata are for operators only."""
    account = await service.profiles.patch_user_metadata(principal, body.user_metadata, client)
    return user_body(account.user, principal.grants)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    # RFC 6749 section 5.2 fixes this shape; it is not problem+json.
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=NO_STORE
    )


@router.post(
    "/auth/token",
    response_model=OAuthTokenResponse,
    responses={
        **BODY,
        400: {
            # The grant's errors are RFC 6749's; a body that does not parse is a problem.
            **problem_response(
                400,
                "RFC 6749 section 5.2 error (a body that does not parse: problem http-error); "
                "a user with a second factor: invalid_grant `mfa_required`, with the pending "
                "sign-in to complete with the mfa grant.",
                "http-error",
            ),
            "model": OAuthError | MfaRequiredError,
        },
        **unprocessable(PasswordPolicyError.problem),
        **RATE_LIMITED,
        **UNAVAILABLE,
    },
    openapi_extra=TOKEN_REQUEST_BODY,
)
async def token(
    service: Service,
    client: Client,
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    refresh_token: Annotated[str | None, Form()] = None,
    scope: Annotated[str | None, Form()] = None,
    mfa_token: Annotated[str | None, Form()] = None,
    mfa_method: Annotated[str | None, Form(alias="method")] = None,
    code: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    """OAuth 2.0 token endpoint (RFC 6749 4.3 and 6) for clients without a cookie jar."""
    del scope  # accepted for compatibility; tokenward issues no scopes yet
    try:
        if grant_type == "password":
            if not username or password is None:
                return _oauth_error("invalid_request", "username and password are required")
            login = await service.sessions.login(username, password, client)
            if isinstance(login, MfaPending):
                refused = {"error": "invalid_grant", "error_description": "mfa_required"}
                return JSONResponse(
                    {**refused, **mfa_required_body(login)}, status_code=400, headers=NO_STORE
                )
            issued = login
        elif grant_type == MFA_GRANT and service.settings.mfa is not MfaMode.OFF:
            if not mfa_token or not code:
                return _oauth_error("invalid_request", "mfa_token and code are required")
            try:
                method = MfaMethod(mfa_method or MfaMethod.TOTP.value)
            except ValueError:
                return _oauth_error("invalid_request", "method is totp or recovery_code")
            try:
                issued = await service.mfa.verify(mfa_token, method, code, client)
            except MfaFailedError:
                return _oauth_error(
                    "invalid_grant", "the code is wrong, or the sign-in attempt is no longer valid"
                )
        elif grant_type == "refresh_token":
            if not refresh_token:
                return _oauth_error("invalid_request", "refresh_token is required")
            issued = await service.sessions.refresh(refresh_token, client)
        elif grant_type is None:
            return _oauth_error("invalid_request", "grant_type is required")
        else:
            return _oauth_error(
                "unsupported_grant_type", f"use password, refresh_token or {MFA_GRANT}"
            )
    except AuthenticationError:
        return _oauth_error("invalid_grant", "email or password is incorrect")
    except EmailNotVerifiedError:
        return _oauth_error("invalid_grant", "the email address is not verified yet")
    except TokenError:
        return _oauth_error("invalid_grant", "the refresh token is invalid, expired or revoked")
    note_identity(issued.user_id, issued.session_id)
    body: dict[str, Any] = OAuthTokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
    ).model_dump()
    return JSONResponse(body, headers=NO_STORE)


@router.get("/.well-known/jwks.json", response_model=JWKSet)
async def jwks(service: Service) -> JSONResponse:
    max_age = int(service.settings.jwks_max_age.total_seconds())
    return JSONResponse(
        {"keys": service.signing_keys.published_keys()},
        headers={"Cache-Control": f"public, max-age={max_age}"},
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "A dependency is unreachable", "model": Readiness}},
)
async def readyz(service: Service) -> JSONResponse:
    """Readiness: the database (and Redis, when configured) answer; 503 until they do."""
    checks = await service.readiness()
    ready = all(state == "ok" for state in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
