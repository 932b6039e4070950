"""Access tokens: RFC 9068 JWTs (``typ: at+jwt``), signed and verified with a pinned algorithm."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from jwt.utils import base64url_decode

from tokenward.exceptions import TokenError
from tokenward.keys import Keyring, SigningKey

__all__ = ["LEEWAY_SECONDS", "MAX_TOKEN_LENGTH", "AccessClaims", "AccessTokenCodec"]

LEEWAY_SECONDS = 30
"""Clock skew tolerated on exp, nbf and iat."""
MAX_TOKEN_LENGTH = 8192
"""Longer tokens are refused before any parsing."""

_ACCESS_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Headers that would let the token choose its own key or demand extensions (RFC 8725 3.1, 3.10).
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
_REQUIRED_CLAIMS = ("iss", "sub", "iat", "exp", "jti", "sid")


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise TokenError("duplicate member name")
    return dict(pairs)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of an access token."""

    sub: str
    sid: str
    jti: str
    iss: str
    iat: int
    exp: int
    aud: str | None = None


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

    def issue(self, *, user_id: str, session_id: str, now: float | None = None) -> str:
        """Sign a new access token for ``user_id`` in session ``session_id``."""
        issued_at = int(time.time() if now is None else now)
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
        headers = {"kid": key.kid, "typ": "at+jwt"}
        return jwt.encode(claims, key.private_key, key.alg, headers=headers)

    def verify(self, token: str, *, now: float | None = None) -> AccessClaims:
        """Return the claims of a valid token; raise :class:`TokenError` for anything else.

        Time claims are checked against ``now`` (default: the system clock), with the leeway.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token missing or too long")
        moment = time.time() if now is None else now
        try:
            header = self._strict_segments(token)
            key = self._key_for(header, moment)
            claims = jwt.decode(
                token,
                key.verify_key,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "verify_aud": bool(self.audience),
                    # Checked in _typed against the caller's clock, strictly typed.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            return self._typed(claims, moment)
        except TokenError:
            raise
        except Exception as exc:  # PyJWT raises TypeError/ValueError on some malformed claims
            raise TokenError(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _strict_segments(token: str) -> dict[str, Any]:
        """Parse header and payload strictly (JSON objects, no duplicate names: RFC 7515 5.2).

        PyJWT would silently keep the last of two duplicate names; two readers of one token
        could then disagree about its claims. Returns the header.
        """
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("not a compact JWS")
        decoded = []
        for segment in parts[:2]:
            value = json.loads(base64url_decode(segment), object_pairs_hook=_unique_names)
            if not isinstance(value, dict):
                raise TokenError("header and payload must be JSON objects")
            decoded.append(value)
        return decoded[0]

    def _key_for(self, header: dict[str, Any], now: float) -> SigningKey:
        """The key the header names, pinned to that key's own algorithm."""
        kid = header.get("kid")
        key = (
            self.keyring.verify_key(kid, datetime.fromtimestamp(now, UTC))
            if isinstance(kid, str)
            else None
        )
        if key is None:
            raise TokenError("unknown kid")
        if header.get("alg") != key.alg:
            raise TokenError("unexpected alg")
        if str(header.get("typ", "")).lower() not in _ACCESS_TYPES:
            raise TokenError("not an access token (typ)")
        if _FORBIDDEN_HEADERS.intersection(header):
            raise TokenError("forbidden header parameter")
        return key

    def _typed(self, claims: dict[str, Any], now: float) -> AccessClaims:
        for name in ("sub", "sid", "jti", "iss"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise TokenError(f"claim {name} must be a non-empty string")
        for name in ("iat", "exp", "nbf"):
            value = claims.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TokenError(f"claim {name} must be an integer")
        if claims["exp"] <= now - self.leeway:
            raise TokenError("expired")
        if claims["iat"] > now + self.leeway or claims.get("nbf", 0) > now + self.leeway:
            raise TokenError("not valid yet")
        aud = claims.get("aud")
        if self.audience is None and aud is not None:
            raise TokenError("token has an audience; this server expects none")
        return AccessClaims(
            sub=claims["sub"],
            sid=claims["sid"],
            jti=claims["jti"],
            iss=claims["iss"],
            iat=claims["iat"],
            exp=claims["exp"],
            aud=aud if isinstance(aud, str) else None,
        )
