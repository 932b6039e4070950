"""Signing keys: made once, kept on disk (mode 0600), published as a JWKS (RFC 7517)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import get_default_algorithms

from tokenward.config import Settings, SigningAlg

__all__ = ["SigningKey", "jwk_thumbprint", "load_or_create_refresh_secret", "load_signing_key"]

# RFC 7638 section 3.2: the members that make a key's thumbprint, per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


@dataclass(frozen=True)
class SigningKey:
    """One key that signs access tokens. ``public_jwk`` is None for HS256 (nothing to publish)."""

    kid: str
    alg: SigningAlg
    private_key: Any  # a cryptography private key object, or the HMAC secret as bytes
    verify_key: Any  # the matching public key object, or the same HMAC secret
    public_jwk: dict[str, str] | None = field(default=None, repr=False)


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
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_private(path: Path, data: bytes) -> bytes:
    """Create ``path`` with mode 0600 unless another process won the race; return what is there."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return data


def _asymmetric_key(alg: SigningAlg, path: Path) -> SigningKey:
    if path.exists():
        pem = path.read_bytes()
    else:
        fresh = _generate(alg).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = _write_private(path, fresh)
    private_key = serialization.load_pem_private_key(pem, password=None)
    public_key = private_key.public_key()
    algorithm = get_default_algorithms()[alg]
    jwk: dict[str, str] = json.loads(algorithm.to_jwk(public_key))
    kid = jwk_thumbprint(jwk)
    jwk.update(kid=kid, alg=alg, use="sig")
    return SigningKey(kid, alg, private_key, public_key, jwk)


def load_signing_key(settings: Settings) -> SigningKey:
    """The key access tokens are signed with; generated on first start and then kept."""
    if settings.signing_alg == "HS256":
        assert settings.hs256_secret is not None  # noqa: S101 - enforced by Settings
        secret = settings.hs256_secret.get_secret_value().encode()
        kid = "hs256-" + hashlib.sha256(b"tokenward-kid:" + secret).hexdigest()[:16]
        return SigningKey(kid, "HS256", secret, secret, None)
    path = settings.data_dir / "keys" / f"signing-{settings.signing_alg.lower()}.pem"
    return _asymmetric_key(settings.signing_alg, path)


def load_or_create_refresh_secret(settings: Settings) -> bytes:
    """The HMAC key that refresh tokens are computed with (32 random bytes, mode 0600)."""
    path = settings.data_dir / "keys" / "refresh.key"
    if path.exists():
        return path.read_bytes()
    return _write_private(path, secrets.token_bytes(32))
