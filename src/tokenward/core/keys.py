"""Signing keys and their schedule: made, published before they sign, kept until unneeded.

A key's life (RFC 7517 JWKS; rotation without logging anyone out):

    upcoming   published in the JWKS, not signing yet (activates_at in the future), so that
               every verifier's cached JWKS already holds it when it starts to sign
    signing    the newest activated key of the configured algorithm
    verifying  superseded, still published until the last token it signed has expired
    gone       no longer published (or retired by hand: its tokens stop verifying at once)

Everything here is pure: the store keeps the keys, this module decides what they are.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import get_default_algorithms

SigningAlg = Literal["ES256", "EdDSA", "RS256", "HS256"]
"""The JWS algorithms tokenward signs access tokens with."""

__all__ = [
    "Keyring",
    "SigningAlg",
    "SigningKey",
    "generate_private_pem",
    "hs256_key",
    "jwk_thumbprint",
    "load_key",
]

# RFC 7638 section 3.2: the members that make a key's thumbprint, per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


_DAWN = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class SigningKey:
    """One key. ``public_jwk`` is None for HS256 (nothing to publish)."""

    kid: str
    alg: SigningAlg
    private_key: Any = field(repr=False)  # a cryptography private key, or the HMAC secret
    verify_key: Any = field(repr=False)  # the matching public key, or the same HMAC secret
    public_jwk: dict[str, str] | None = field(default=None, repr=False)
    activates_at: datetime = _DAWN
    retired_at: datetime | None = None
    created_at: datetime | None = None
    """When it was made (None: not known, an HS256 secret)."""


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url without padding: a stable, content-derived kid."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _generate(alg: SigningAlg) -> PrivateKeyTypes:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"{alg} keys are not generated (HS256 uses TOKENWARD_HS256_SECRET)")


def generate_private_pem(alg: SigningAlg) -> bytes:
    return _generate(alg).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(
    alg: SigningAlg,
    private_pem: bytes,
    *,
    activates_at: datetime,
    retired_at: datetime | None = None,
    created_at: datetime | None = None,
) -> SigningKey:
    """A key object (with its public JWK and thumbprint kid) from a PKCS#8 PEM."""
    private_key = serialization.load_pem_private_key(private_pem, password=None)
    public_key = private_key.public_key()
    jwk: dict[str, str] = json.loads(get_default_algorithms()[alg].to_jwk(public_key))
    kid = jwk_thumbprint(jwk)
    jwk.update(kid=kid, alg=alg, use="sig")
    return SigningKey(kid, alg, private_key, public_key, jwk, activates_at, retired_at, created_at)


def hs256_key(secret: bytes) -> SigningKey:
    kid = "hs256-" + hashlib.sha256(b"tokenward-kid:" + secret).hexdigest()[:16]
    return SigningKey(kid, "HS256", secret, secret, None)


class Keyring:
    """All keys and the rules for which one signs and which ones are published."""

    def __init__(self, keys: list[SigningKey], *, alg: SigningAlg, token_lifetime: timedelta):
        self.alg = alg
        # A superseded key stays published this long: its last token's lifetime (with leeway).
        self.token_lifetime = token_lifetime
        self.keys = sorted(keys, key=lambda k: (k.activates_at, k.kid))
        self._by_kid = {key.kid: key for key in self.keys}

    def signer(self, now: datetime) -> SigningKey:
        """The newest activated, unretired key of the configured algorithm."""
        for key in reversed(self.keys):
            if key.alg == self.alg and key.retired_at is None and _active(key, now):
                return key
        raise LookupError(f"no {self.alg} key is active")

    def has_signer(self, now: datetime) -> bool:
        try:
            self.signer(now)
        except LookupError:
            return False
        return True

    def _superseded_at(self, key: SigningKey, now: datetime) -> datetime | None:
        """When a newer signer took over from ``key`` (None while ``key`` still signs)."""
        newer = [
            k.activates_at
            for k in self.keys
            if k.alg == self.alg
            and k.retired_at is None
            and k.activates_at > key.activates_at
            and k.activates_at <= now
        ]
        if newer:
            return min(newer)
        if key.alg == self.alg:
            return None
        # The configured algorithm changed: the key stopped signing when the new signer began.
        return self.signer(now).activates_at if self.has_signer(now) else now

    def state(self, key: SigningKey, now: datetime) -> str:
        if key.retired_at is not None:
            return "retired"
        if not _active(key, now):
            return "upcoming"
        superseded = self._superseded_at(key, now)
        if superseded is None:
            return "signing"
        if now < superseded + self.token_lifetime:
            return "verifying"
        return "expired"

    def published(self, now: datetime) -> list[SigningKey]:
        """Keys a verifier needs now or soon: upcoming, signing and still verifying."""
        return [
            key
            for key in self.keys
            if key.public_jwk is not None
            and self.state(key, now) in {"upcoming", "signing", "verifying"}
        ]

    def verify_key(self, kid: str, now: datetime) -> SigningKey | None:
        """The key for a presented token's kid, if tokens signed by it may still be valid."""
        key = self._by_kid.get(kid)
        if key is None or self.state(key, now) not in {"signing", "verifying"}:
            return None
        return key


def _active(key: SigningKey, now: datetime) -> bool:
    return key.activates_at <= now
