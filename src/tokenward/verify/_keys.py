"""Keys a token may be verified with, each pinned to one algorithm and parsed once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import PyJWTError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "KeyLike",
    "VerifyKey",
    "key_from_jwk",
    "keys_from_jwks",
    "load_key",
]

KeyLike: TypeAlias = str | bytes | Mapping[str, Any] | PublicKeyTypes | PrivateKeyTypes
"""A PEM (public key, private key or certificate), a JWK, a ``cryptography`` key object, or
an HMAC secret (with ``algorithm="HS256"``)."""

ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
"""Algorithms a published key (JWKS) may be pinned to."""
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
"""Shared-secret algorithms: only for a static ``key=``, never from a JWKS."""

_ALGORITHMS: dict[str, Algorithm] = get_default_algorithms()
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_ALG_OF_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
# RFC 7518 3.2: the secret must be at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048
# Members that only a private or symmetric JWK has (RFC 7518 6.2.2, 6.3.2, 6.4).
_SECRET_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One verification key: its ``kid`` (None: any kid), the one ``alg`` it accepts, the
    ready key object and PyJWT's algorithm object that checks signatures with it."""

    kid: str | None
    alg: str
    key: Any = field(repr=False)
    algorithm: Algorithm = field(repr=False, compare=False)

    def verify_signature(self, signing_input: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's signature over ``signing_input``."""
        return bool(self.algorithm.verify(signing_input, self.key, signature))


def _check_pairing(alg: str, key: Any) -> None:
    """Refuse a key object that does not belong to ``alg`` (RFC 7518 3.1 table, 8725 3.1)."""
    if alg in _CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, _CURVES[alg]
        ):
            raise ValueError(f"{alg} needs an EC public key on its own curve")
    elif alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raise ValueError("EdDSA needs an Ed25519 or Ed448 public key")
    elif alg[:2] in {"RS", "PS"} and alg in ASYMMETRIC_ALGORITHMS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"{alg} needs an RSA public key")
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys under {MIN_RSA_BITS} bits are refused")
    else:
        raise ValueError(f"unsupported algorithm {alg!r}")


def _infer_alg(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        for alg, curve in _CURVES.items():
            if isinstance(key.curve, curve):
                return alg
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise ValueError("cannot tell the algorithm of this key: pass algorithm= (e.g. 'RS256')")


def _hmac_key(secret: bytes, alg: str, kid: str | None) -> VerifyKey:
    if len(secret) < _HMAC_MIN_BYTES[alg]:
        raise ValueError(f"{alg} needs a secret of at least {_HMAC_MIN_BYTES[alg]} bytes")
    algorithm = _ALGORITHMS[alg]
    try:  # PyJWT refuses a PEM or SSH public key as an HMAC secret (key confusion)
        prepared = algorithm.prepare_key(secret)
    except PyJWTError as exc:
        raise ValueError(f"not an {alg} secret: {exc}") from None
    return VerifyKey(kid, alg, prepared, algorithm)


def _public_from_pem(data: bytes) -> Any:
    try:
        return serialization.load_pem_public_key(data)
    except ValueError:
        pass
    try:
        return serialization.load_pem_private_key(data, password=None).public_key()
    except (ValueError, TypeError):
        pass
    try:
        return x509.load_pem_x509_certificate(data).public_key()
    except ValueError:
        raise ValueError("not a PEM public key, private key or certificate") from None


def load_key(key: KeyLike, *, algorithm: str | None = None, kid: str | None = None) -> VerifyKey:
    """A :class:`VerifyKey` from a PEM, JWK, key object or HMAC secret; ``ValueError`` if unfit.

    A private key is reduced to its public half. ``kid`` pins the token's kid (a JWK's own
    ``kid`` does too); without one, any kid is accepted, since one key needs no selecting.
    """
    if isinstance(key, Mapping):
        return key_from_jwk(key, algorithm=algorithm, kid=kid)
    if algorithm in HMAC_ALGORITHMS:
        if not isinstance(key, str | bytes):
            raise ValueError(f"{algorithm} needs the shared secret as bytes")
        return _hmac_key(key.encode() if isinstance(key, str) else key, algorithm, kid)
    if isinstance(key, str | bytes):
        data = key.encode() if isinstance(key, str) else key
        if b"-----BEGIN" not in data:
            raise ValueError("a str or bytes key is a PEM; for a shared secret pass algorithm=")
        key = _public_from_pem(data)
    public = key.public_key() if hasattr(key, "public_key") else key
    alg = algorithm or _infer_alg(public)
    _check_pairing(alg, public)
    return VerifyKey(kid, alg, public, _ALGORITHMS[alg])


def key_from_jwk(
    jwk: Mapping[str, Any],
    *,
    algorithm: str | None = None,
    kid: str | None = None,
    published: bool = False,
) -> VerifyKey:
    """A key from one JWK (RFC 7517). ``published``: it came from a JWKS, so it must name an
    asymmetric ``alg`` itself and hold no private or secret member."""
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise ValueError("alg must be a string")
    if published and alg not in ASYMMETRIC_ALGORITHMS:
        raise ValueError("no asymmetric alg (a published key must name its algorithm)")
    if algorithm is not None and alg is not None and algorithm != alg:
        raise ValueError(f"the JWK is for {alg}, not {algorithm}")
    alg = alg or algorithm
    own_kid = jwk.get("kid")
    if own_kid is not None and not isinstance(own_kid, str):
        raise ValueError("kid must be a string")
    if kid is not None and own_kid is not None and kid != own_kid:
        raise ValueError("the JWK's kid differs from kid=")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("use is not sig")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError("key_ops does not allow verify")
    if alg in HMAC_ALGORITHMS and not published:
        secret = _ALGORITHMS[alg].from_jwk(dict(jwk))
        return _hmac_key(secret, alg, kid or own_kid)
    if _SECRET_MEMBERS.intersection(jwk):
        raise ValueError("holds private or secret key material")
    if alg is None:
        crv = jwk.get("crv")
        alg = "EdDSA" if jwk.get("kty") == "OKP" else _ALG_OF_CURVE.get(str(crv), "")
        if not alg:
            raise ValueError("cannot tell the algorithm of this JWK: pass algorithm=")
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise ValueError(f"unsupported algorithm {alg!r}")
    try:
        public = _ALGORITHMS[alg].from_jwk(dict(jwk))
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a usable {alg} JWK ({type(exc).__name__})") from None
    _check_pairing(alg, public)
    return VerifyKey(kid or own_kid, alg, public, _ALGORITHMS[alg])


def _canonical(jwk: Mapping[str, Any]) -> str:
    return json.dumps(jwk, sort_keys=True, separators=(",", ":"))


def keys_from_jwks(
    document: Any, parsed: Mapping[str, VerifyKey]
) -> tuple[dict[str, VerifyKey], dict[str, VerifyKey], list[str]]:
    """The usable keys of a JWK Set by kid, the parse cache to keep, and why others were skipped.

    ``parsed`` maps each JWK's canonical JSON to its key from an earlier fetch, so a key seen
    before is not parsed again. A key without ``kid`` or ``alg``, with a symmetric or ``none``
    alg, or sharing its kid with another is skipped: a token could not be pinned to it.
    Raises ``ValueError`` when the document is not a JWK Set at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    keys: dict[str, VerifyKey] = {}
    cache: dict[str, VerifyKey] = {}
    skipped: list[str] = []
    duplicated: set[str] = set()
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            skipped.append(f"key {index}: no kid")
            continue
        kid = jwk["kid"]
        canonical = _canonical(jwk)
        key = parsed.get(canonical)
        if key is None:
            try:
                key = key_from_jwk(jwk, published=True)
            except ValueError as exc:
                skipped.append(f"key {kid}: {exc}")
                continue
        cache[canonical] = key
        if kid in keys:
            duplicated.add(kid)
        keys[kid] = key
    for kid in duplicated:
        del keys[kid]
        skipped.append(f"key {kid}: kid used twice")
    return keys, cache, skipped
