"""Flask glue: ``@require_token(verifier, scopes=[...])`` puts the claims in ``flask.g.claims``.

    from tokenward.verify.flask import require_token

    @app.get("/me")
    @require_token(verifier)
    def me():
        return {"sub": g.claims.sub}

    @app.post("/transfers")
    @require_token(verifier, scopes=["payments:write"], acr="aal2", max_auth_age=300)
    def pay(): ...

Refusals as in the other glue: 401 with a Bearer challenge (``error="invalid_token"`` unless
no credentials were sent), 403 ``insufficient_scope`` for a missing scope, 403 "missing role"
for a missing role, 401 ``insufficient_user_authentication`` (RFC 9470) for too weak or too
old an authentication, 503 when tokenward cannot be asked. Flask views are synchronous: this
uses ``verifier.verify``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from flask import Response, g, jsonify, request

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

__all__ = ["current_claims", "require_token"]

View = TypeVar("View", bound=Callable[..., Any])


def _response(denial: Denial) -> Response:
    response = jsonify(detail=denial.detail)
    response.status_code = denial.status
    response.headers.update(denial.headers)
    return response


def _authorize(
    verifier: Verifier,
    scopes: tuple[str, ...],
    roles: tuple[str, ...],
    step_up: StepUp | None,
) -> Any:
    """The claims of the request's token, or the Response refusing it: the first check that
    fails answers, in this order: the token, its scopes, its roles, then step-up (a new
    authentication would not grant a scope or a role, so the client is not sent to one)."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return _response(missing_credentials(verifier.realm))
    try:
        claims = verifier.verify(token)
    except VerificationError as exc:
        return _response(refused(exc, verifier.realm))
    if not claims.has_scopes(*scopes):
        return _response(insufficient_scope(verifier.realm, scopes))
    if not claims.has_roles(*roles):
        return _response(missing_role(verifier.realm))
    if step_up is not None:
        denial = step_up.denial(claims, verifier.clock, verifier.realm)
        if denial is not None:
            return _response(denial)
    return claims


def require_token(
    verifier: Verifier,
    *,
    scopes: Iterable[str] = (),
    roles: Iterable[str] = (),
    acr: str | Iterable[str] = (),
    max_auth_age: int | None = None,
) -> Callable[[View], View]:
    """A view decorator: the view runs only for a valid token holding ``scopes`` and ``roles``.

    With ``acr`` and/or ``max_auth_age``, also only when the user authenticated strongly and
    recently enough (RFC 9470): the token's ``acr`` meets one of ``acr`` (``"aal2"`` is met by
    ``aal2`` and ``aal3``), and at most ``max_auth_age`` seconds have passed since its
    ``auth_time``; 401 ``insufficient_user_authentication`` otherwise.
    """
    needed_scopes, needed_roles = tuple(scopes), tuple(roles)
    acr_values = (acr,) if isinstance(acr, str) else tuple(acr)
    step_up = StepUp(acr_values, max_auth_age) if acr_values or max_auth_age is not None else None

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outcome = _authorize(verifier, needed_scopes, needed_roles, step_up)
            if isinstance(outcome, Response):
                return outcome
            g.claims = outcome
            return view(*args, **kwargs)

        return cast(View, wrapper)

    return decorator


def current_claims() -> Claims:
    """The claims ``require_token`` stored for this request (``LookupError`` outside one)."""
    claims = g.get("claims")
    if not isinstance(claims, Claims):
        raise LookupError("no verified token in this request: decorate the view with require_token")
    return claims
