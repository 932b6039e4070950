"""Verify tokenward access tokens in your own service (a resource server).

    from tokenward.verify import Verifier, VerificationError

    verifier = Verifier(issuer="https://auth.example.com")
    claims = verifier.verify(token)           # or: await verifier.averify(token)
    claims.sub, claims.sid, claims.scope      # typed; VerificationError(reason) otherwise

Keys come from the issuer's JWKS (``/.well-known/jwks.json``), cached for its
``Cache-Control: max-age`` (default 300 s, clamped to 30 s - 1 h), refetched once when a token
names a kid the set lacks, but never twice within ``jwks_refetch_floor`` (10 s), so tokens
with made-up kids cannot make the verifier hammer tokenward. Each key is pinned to the ``alg``
it declares; a key without one, or with a symmetric or ``none`` alg, is ignored. A failed
fetch keeps the keys already known. A static ``key=`` (PEM, JWK, key object, or an HMAC
secret with ``algorithm="HS256"``) replaces the JWKS.

The token rules are tokenward's own (see ``tokenward.verify._core``): pinned algorithm,
``typ: at+jwt``, no key-choosing headers, strict parsing, required and strictly typed claims,
30 s leeway, 8 KiB cap.

Revocation feed (``revocation_url``, ``client_id``, ``client_secret``)
    Signatures alone cannot tell that a session ended. tokenward lists ended sessions at
    ``GET /auth/revocations?after=<cursor>``; the verifier keeps the set of their sids and
    refuses their tokens (:class:`RevokedTokenError`). It polls lazily, inside ``verify``:
    when more than ``revocation_bound / 2`` (default 2.5 s) has passed since the last poll, the
    request that notices polls first (awaited in ``averify``; inline with a timeout of at most
    ``revocation_bound / 2`` in ``verify``) while concurrent requests go on with what is known.
    So no request waits for more than one poll, and, while the feed answers, a revoked
    session's token passes at most ``revocation_bound`` seconds after tokenward lists it,
    without one call per request. Each sid is forgotten ``max_token_lifetime`` (+ twice the
    leeway) after its revocation, when all its tokens have expired; tokens that live longer
    than ``max_token_lifetime`` (default 1 h) are refused for that reason.

When tokenward is down
    A failed poll keeps enforcing every revocation already known and is retried at the next
    interval, not on every request. Once the last good poll is older than ``max_staleness``
    (default 60 s) the ``on_stale`` policy applies: ``"accept"`` (default) keeps accepting
    validly signed tokens and logs a warning, favouring availability, since a session ended
    during the outage passes until the feed answers again (at most until its tokens expire);
    ``"reject"`` refuses every token with :class:`VerifierUnavailableError` (HTTP 503 in the
    framework glue), favouring revocation. With no key set fetched yet, tokens are refused with
    ``VerifierUnavailableError("keys_unavailable")``.

Step-up authentication (RFC 9470)
    ``claims.amr``, ``claims.acr`` and ``claims.auth_time`` say how and when the user
    authenticated. A :class:`StepUp` (acceptable ACRs, ``aal1 < aal2 < aal3``, and/or a
    ``max_age``) tells whether that is enough; ``verifier.step_up_denial(claims, "aal2",
    max_auth_age=300)`` gives the 401 ``insufficient_user_authentication`` answer when not.

Framework glue: ``tokenward.verify.fastapi`` (``Depends(verifier)``, ``require_scopes``,
``require_roles``, ``require_acr``), ``tokenward.verify.starlette`` (ASGI middlewares:
``BearerAuthMiddleware``, ``StepUpMiddleware``) and ``tokenward.verify.flask``
(``require_token``); each imports its framework only when imported.
This package itself imports only the standard library, PyJWT, cryptography and httpx.
"""

from __future__ import annotations

from tokenward.verify._claims import Claims
from tokenward.verify._clock import SYSTEM_CLOCK, Clock, SystemClock
from tokenward.verify._core import (
    LEEWAY_SECONDS,
    MAX_TOKEN_LENGTH,
    ParsedToken,
    check_claims,
    parse_compact,
    verify_compact,
    verify_parsed,
)
from tokenward.verify._errors import (
    REASONS,
    ExpiredTokenError,
    RevokedTokenError,
    VerificationError,
    VerifierUnavailableError,
)
from tokenward.verify._http import Denial, bearer_token, challenge
from tokenward.verify._keys import KeyLike, VerifyKey, key_from_jwk, keys_from_jwks, load_key
from tokenward.verify._stepup import ACR_LEVELS, StepUp, acr_satisfies
from tokenward.verify._verifier import Verifier

__all__ = [
    "ACR_LEVELS",
    "LEEWAY_SECONDS",
    "MAX_TOKEN_LENGTH",
    "REASONS",
    "SYSTEM_CLOCK",
    "Claims",
    "Clock",
    "Denial",
    "ExpiredTokenError",
    "KeyLike",
    "ParsedToken",
    "RevokedTokenError",
    "StepUp",
    "SystemClock",
    "VerificationError",
    "Verifier",
    "VerifierUnavailableError",
    "VerifyKey",
    "acr_satisfies",
    "bearer_token",
    "challenge",
    "check_claims",
    "key_from_jwk",
    "keys_from_jwks",
    "load_key",
    "parse_compact",
    "verify_compact",
    "verify_parsed",
]
