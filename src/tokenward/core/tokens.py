"""Access tokens: RFC 9068 JWTs (``typ: at+jwt``), signed and verified with a pinned algorithm."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from tokenward.core.keys import Keyring, SigningKey
from tokenward.core.mfa import Authentication
from tokenward.core.roles import NO_GRANTS, Grants
from tokenward.exceptions import TokenError
from tokenward.verify import (
    LEEWAY_SECONDS,
    MAX_TOKEN_LENGTH,
    Claims,
    VerificationError,
    VerifyKey,
    load_key,
    parse_compact,
    verify_parsed,
)

__all__ = [
    "LEEWAY_SECONDS",
    "MAX_TOKEN_LENGTH",
    "AccessTokenCodec",
    "Claims",
    "TokenTooLargeError",
]


_ALGORITHMS = get_default_algorithms()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class TokenTooLargeError(Exception):
    """The token would be longer than verifiers accept (MAX_TOKEN_LENGTH characters)."""

    def __init__(self, length: int) -> None:
        super().__init__(f"access token of {length} characters (at most {MAX_TOKEN_LENGTH})")
        self.length = length


VERIFIED_CACHE_SIZE = 20_000
"""Verified tokens remembered per process (a few MB at most; the oldest go first)."""


class AccessTokenCodec:
    """Issues and verifies access tokens for one issuer with a keyring.

    ``keyring`` is replaced whole when the keys are reloaded (an atomic reference swap).
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        issuer: str,
        audience: str | None,
        ttl: timedelta,
        leeway: int = LEEWAY_SECONDS,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = int(ttl.total_seconds())
        self.leeway = leeway
        self._verify_keys: dict[str, VerifyKey] = {}
        # Tokens already verified under the current keyring: a repeated token costs a lookup,
        # not a signature check. Keyed by the whole token, so only that exact string hits.
        self._verified: dict[str, tuple[Keyring, Claims]] = {}
        self._signers: dict[str, tuple[SigningKey, bytes, Algorithm]] = {}

    def issue(
        self,
        *,
        user_id: str,
        session_id: str,
        now: float,
        grants: Grants = NO_GRANTS,
        extra: Mapping[str, Any] | None = None,
        authentication: Authentication | None = None,
    ) -> str:
        """Sign a new access token for ``user_id`` in session ``session_id`` at ``now``.

        ``authentication`` becomes ``amr``, ``acr`` and ``auth_time`` (RFC 8176, RFC 9470).

        ``grants`` become ``roles`` and ``scope`` (left out when empty); ``extra`` are custom
        claims, already stripped of the reserved ones (core.claims). TokenTooLargeError when
        the token would pass MAX_TOKEN_LENGTH, which verifiers refuse unread."""
        issued_at = int(now)
        key = self.keyring.signer(datetime.fromtimestamp(issued_at, UTC))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user_id,
            "iat": issued_at,
            "exp": issued_at + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
            "sid": session_id,
        }
        if self.audience is not None:
            claims["aud"] = self.audience
        if authentication is not None:
            claims.update(authentication.claims())
        if grants.roles:
            claims["roles"] = list(grants.roles)
            if grants.permissions:
                claims["scope"] = grants.scope
        if extra:
            claims = {**extra, **claims}
        token = self._sign(key, claims)
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenTooLargeError(len(token))
        return token

    def _sign(self, key: SigningKey, claims: dict[str, Any]) -> str:
        """JWS compact serialisation, signed by PyJWT's algorithm for ``key.alg``.

        What ``jwt.encode`` gives (the same bytes: compact JSON, the header's members sorted),
        less what does not change between tokens: a key's protected header is encoded once,
        and the key is already a loaded key, with nothing to prepare. That was about half of
        ``jwt.encode``'s time over the bare signature."""
        signer = self._signers.get(key.kid)
        if signer is None or signer[0] is not key:
            header = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
            algorithm = _ALGORITHMS[key.alg]
            signer = (key, _b64(_compact_json(header)) + b".", algorithm)
            self._signers[key.kid] = signer
        _, header_segment, algorithm = signer
        signing_input = header_segment + _b64(_compact_json(claims))
        signature = algorithm.sign(signing_input, key.private_key)
        return (signing_input + b"." + _b64(signature)).decode("ascii")

    def verify(self, token: str, *, now: float) -> Claims:
        """Return the claims of a valid token; raise :class:`TokenError` for anything else.

        The rules are tokenward.verify's (one implementation for the server and for resource
        servers); the keyring decides which kids may still verify. Time claims are checked
        against ``now`` (Unix seconds, from the caller's clock), with the leeway.
        """
        moment = now
        seen = self._verified.get(token)
        if seen is not None and seen[0] is self.keyring and self._in_time(seen[1], moment):
            return seen[1]
        try:
            parsed = parse_compact(token)
            key = self._verify_key(parsed.kid, moment)
            claims = verify_parsed(
                parsed,
                key,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                now=moment,
            )
        except VerificationError as exc:
            raise TokenError(exc.reason) from None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (self.keyring, claims)
        return claims

    def _in_time(self, claims: Claims, now: float) -> bool:
        # The time checks of verify_parsed, again: only time moves between two uses.
        leeway = self.leeway
        nbf = claims.raw.get("nbf", 0)
        return claims.exp > now - leeway and claims.iat <= now + leeway and nbf <= now + leeway

    def _verify_key(self, kid: str | None, now: float) -> VerifyKey:
        """The verification key for a kid the keyring still publishes, parsed once."""
        signing = self.keyring.verify_key(kid, datetime.fromtimestamp(now, UTC)) if kid else None
        if signing is None:
            raise TokenError("unknown kid")
        cached = self._verify_keys.get(signing.kid)
        if cached is None:
            cached = load_key(signing.verify_key, algorithm=signing.alg, kid=signing.kid)
            self._verify_keys[signing.kid] = cached
        return cached
