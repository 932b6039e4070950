"""FastAPI glue: ``Depends(verifier)`` gives the claims; ``require_scopes``/``require_roles``;
``require_acr`` for step-up authentication (RFC 9470).

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from tokenward.verify import Claims, Verifier
    from tokenward.verify.fastapi import require_acr, require_scopes

    verifier = Verifier(issuer="https://auth.example.com")

    @app.get("/me")
    async def me(user: Annotated[Claims, Depends(verifier)]) -> dict[str, str]: ...

    @app.post("/notes")
    async def add(user: Annotated[Claims, Depends(require_scopes(verifier, "notes:write"))]): ...

    @app.post("/transfers", dependencies=[Depends(require_scopes(verifier, "payments:write"))])
    async def pay(
        user: Annotated[Claims, Depends(require_acr(verifier, "aal2", max_auth_age=300))],
    ): ...

No credentials: 401 ``WWW-Authenticate: Bearer realm="api"`` (no error code, RFC 6750 3.1);
a refused token: 401 with ``error="invalid_token"``; a missing scope: 403 with
``error="insufficient_scope"`` naming the scope; a missing role: 403 "missing role" (the
challenge keeps RFC 6750's ``insufficient_scope`` code); too weak or too old an
authentication: 401 with ``error="insufficient_user_authentication"`` and ``acr_values`` /
``max_age`` (RFC 9470 3); tokenward unreachable (see ``on_stale``): 503. The token is verified
once per request however many of these a route depends on (FastAPI caches ``Depends(verifier)``).
"""

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from tokenward.verify._claims import Claims
from tokenward.verify._errors import VerificationError
from tokenward.verify._http import (
    Denial,
    bearer_token,
    insufficient_scope,
    missing_credentials,
    missing_role,
    refused,
)
from tokenward.verify._stepup import StepUp
from tokenward.verify._verifier import Verifier

__all__ = [
    "authenticate",
    "dependency_signature",
    "require_acr",
    "require_roles",
    "require_scopes",
]

# Declared for OpenAPI only (the docs' "Authorize" button); the header is read below, since
# HTTPBearer cannot tell "no credentials" from "malformed credentials".
_BEARER = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A tokenward access token (RFC 9068 at+jwt).",
)


def dependency_signature() -> inspect.Signature:
    """The signature FastAPI sees for ``Depends(verifier)``."""
    return inspect.Signature(
        [
            inspect.Parameter(
                "connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
            ),
            inspect.Parameter(
                "credentials",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=Security(_BEARER),
                annotation=HTTPAuthorizationCredentials | None,
            ),
        ],
        return_annotation=Claims,
    )


def _http_error(denial: Denial) -> HTTPException:
    return HTTPException(denial.status, denial.detail, headers=denial.headers)


async def authenticate(verifier: Verifier, connection: HTTPConnection) -> Claims:
    """The claims of the request's Bearer token, or the HTTPException to answer with."""
    token = bearer_token(connection.headers.get("authorization"))
    if token is None:
        raise _http_error(missing_credentials(verifier.realm))
    try:
        return await verifier.averify(token)
    except VerificationError as exc:
        raise _http_error(refused(exc, verifier.realm)) from None


def require_scopes(verifier: Verifier, *scopes: str) -> Callable[..., Awaitable[Claims]]:
    """A dependency giving the claims when the token grants every one of ``scopes``; 403 if not."""

    async def dependency(claims: Annotated[Claims, Depends(verifier)]) -> Claims:
        if not claims.has_scopes(*scopes):
            raise _http_error(insufficient_scope(verifier.realm, scopes))
        return claims

    return dependency


def require_roles(verifier: Verifier, *roles: str) -> Callable[..., Awaitable[Claims]]:
    """A dependency giving the claims when the token carries every one of ``roles``; 403 if not."""

    async def dependency(claims: Annotated[Claims, Depends(verifier)]) -> Claims:
        if not claims.has_roles(*roles):
            raise _http_error(missing_role(verifier.realm))
        return claims

    return dependency


def require_acr(
    verifier: Verifier, *acr_values: str, max_auth_age: int | None = None
) -> Callable[..., Awaitable[Claims]]:
    """A dependency giving the claims when the user authenticated strongly and recently enough
    (RFC 9470); 401 ``insufficient_user_authentication`` if not.

    The token's ``acr`` must meet one of ``acr_values`` (``"aal2"`` is met by ``aal2`` and
    ``aal3``; other values only by themselves), and at most ``max_auth_age`` seconds may have
    passed since its ``auth_time``. ``require_acr(verifier, max_auth_age=300)`` checks recency
    alone. The requirement is checked here, at definition: a bad one is a ``ValueError`` at
    import, not at the first request.

    ``max_auth_age`` is measured on the clock of the verifier that verified the token: with
    ``app.dependency_overrides[verifier] = fake`` (tests), the fake's.
    """
    requirement = StepUp(acr_values, max_auth_age)

    async def dependency(
        connection: HTTPConnection, claims: Annotated[Claims, Depends(verifier)]
    ) -> Claims:
        active = _in_use(verifier, connection)
        denial = requirement.denial(claims, active.clock, active.realm)
        if denial is not None:
            raise _http_error(denial)
        return claims

    return dependency


def _in_use(verifier: Verifier, connection: HTTPConnection) -> Verifier:
    """The verifier that answered ``Depends(verifier)`` for this request: an override of it
    (a test's fake, on its own clock) when the app has one, else ``verifier`` itself."""
    overrides = getattr(connection.app, "dependency_overrides", None)
    active = overrides.get(verifier) if overrides else None
    return active if isinstance(active, Verifier) else verifier
