"""HTTP answers to a refused request, framework-free (RFC 6750 3 and 3.1, RFC 9470 3)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from tokenward.verify._errors import VerificationError, VerifierUnavailableError

__all__ = [
    "Denial",
    "bearer_token",
    "challenge",
    "insufficient_scope",
    "insufficient_user_authentication",
    "missing_credentials",
    "missing_role",
    "refused",
]

_log = logging.getLogger("tokenward.verify")


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer`` header (maybe empty); None without one.

    Another scheme (``Basic ...``) counts as no credentials, as RFC 6750 3.1 says.
    """
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    realm: str,
    error: str | None = None,
    scope: Iterable[str] = (),
    description: str = "",
    *,
    acr_values: Iterable[str] = (),
    max_age: int | None = None,
) -> str:
    """A ``WWW-Authenticate: Bearer`` challenge with the realm, an error code, an
    ``error_description``, scopes, and the ``acr_values`` and ``max_age`` of RFC 9470 3."""
    parts = [f"realm={_quoted(realm)}"]
    if error is not None:
        parts.append(f"error={_quoted(error)}")
    if description:
        parts.append(f"error_description={_quoted(description)}")
    scopes = " ".join(scope)
    if scopes:
        parts.append(f"scope={_quoted(scopes)}")
    acrs = " ".join(acr_values)
    if acrs:
        parts.append(f"acr_values={_quoted(acrs)}")
    if max_age is not None:
        parts.append(f"max_age={_quoted(str(max_age))}")
    return "Bearer " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Denial:
    """A status, its headers and a short body detail that says nothing about the token."""

    status: int
    headers: dict[str, str]
    detail: str


def missing_credentials(realm: str) -> Denial:
    """No Bearer credentials at all: 401 with a challenge and no error code (RFC 6750 3.1)."""
    return Denial(401, {"WWW-Authenticate": challenge(realm)}, "not authenticated")


def refused(error: VerificationError, realm: str) -> Denial:
    """401 ``invalid_token`` for a refused token; 503 when tokenward could not be asked."""
    _log.debug("token refused: %s", error)
    if isinstance(error, VerifierUnavailableError):
        return Denial(503, {"Retry-After": "5"}, "token verification unavailable")
    return Denial(401, {"WWW-Authenticate": challenge(realm, "invalid_token")}, "invalid token")


def insufficient_scope(realm: str, scopes: Iterable[str] = ()) -> Denial:
    """403 ``insufficient_scope``, naming the scopes the resource needs."""
    header = challenge(realm, "insufficient_scope", scopes)
    return Denial(403, {"WWW-Authenticate": header}, "insufficient scope")


def insufficient_user_authentication(
    realm: str, acr_values: Iterable[str] = (), max_age: int | None = None, description: str = ""
) -> Denial:
    """401 ``insufficient_user_authentication`` (RFC 9470 3): the token is valid, but the user
    authenticated too weakly or too long ago. The challenge names what the resource requires
    (``acr_values`` and/or ``max_age``), for the client's next authorization request;
    ``description`` says which of the two fell short."""
    header = challenge(
        realm,
        "insufficient_user_authentication",
        description=description,
        acr_values=acr_values,
        max_age=max_age,
    )
    return Denial(401, {"WWW-Authenticate": header}, "insufficient user authentication")


def missing_role(realm: str) -> Denial:
    """403 for a token without a role the resource needs: roles are not scopes, so the body
    and the ``error_description`` say "missing role". The error code stays
    ``insufficient_scope``, the only one RFC 6750 3.1 has for "valid token, not allowed"; no
    ``scope`` is named (a role is not one), nor the roles (what the resource needs is not the
    caller's to learn)."""
    header = challenge(realm, "insufficient_scope", description="missing role")
    return Denial(403, {"WWW-Authenticate": header}, "missing role")
