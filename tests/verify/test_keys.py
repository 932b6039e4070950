"""Keys: each pinned to one algorithm; a published key must declare an asymmetric alg."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from tokenward.verify import key_from_jwk, keys_from_jwks, load_key

from .corpus import public_jwk

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def jwk_of(key: Any, alg: str, **members: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(get_default_algorithms()[alg].to_jwk(key.public_key()))
    return {**jwk, "alg": alg, "use": "sig", **members}


def pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (EC_KEY.public_key(), "ES256"),
        (EC_KEY, "ES256"),
        (pem(EC_KEY), "ES256"),
        (pem(EC_KEY).decode(), "ES256"),
        (ED_KEY.public_key(), "EdDSA"),
        (pem(ED_KEY), "EdDSA"),
        (ec.generate_private_key(ec.SECP384R1()).public_key(), "ES384"),
    ],
    ids=["ec-object", "ec-private", "ec-pem", "ec-pem-str", "ed25519", "ed25519-pem", "p384"],
)
def test_static_keys_infer_their_algorithm(key: Any, alg: str) -> None:
    """EC and EdDSA keys name their algorithm themselves; private keys are cut to public."""
    loaded = load_key(key)
    assert loaded.alg == alg
    assert not hasattr(loaded.key, "private_bytes")


def test_rsa_needs_an_explicit_algorithm() -> None:
    """RS256 or PS256? An RSA key cannot tell, so algorithm= is required."""
    with pytest.raises(ValueError, match="algorithm="):
        load_key(RSA_KEY.public_key())
    assert load_key(pem(RSA_KEY), algorithm="PS256").alg == "PS256"


@pytest.mark.parametrize(
    ("key", "algorithm", "message"),
    [
        (EC_KEY.public_key(), "ES384", "curve"),
        (EC_KEY.public_key(), "RS256", "RSA"),
        (RSA_KEY.public_key(), "ES256", "EC"),
        (rsa.generate_private_key(65537, 1024).public_key(), "RS256", "2048"),  # noqa: S505
        (b"short", "HS256", "32 bytes"),
        (b"x" * 40, "HS512", "64 bytes"),
        (pem(EC_KEY), "HS256", "not an HS256 secret"),
        (b"not a pem", None, "algorithm="),
        (b"-----BEGIN nonsense-----", None, "not a PEM"),
        (EC_KEY.public_key(), "none", "unsupported"),
        (EC_KEY.public_key(), "ES256K", "unsupported"),
    ],
    ids=[
        "ec-as-es384",
        "ec-as-rs256",
        "rsa-as-es256",
        "rsa-1024",
        "hs256-short",
        "hs512-short",
        "hs256-public-pem",
        "bytes-no-alg",
        "bad-pem",
        "none",
        "es256k",
    ],
)
def test_unfit_static_keys_are_refused(key: Any, algorithm: str | None, message: str) -> None:
    """A key that does not belong to its algorithm never becomes a VerifyKey."""
    with pytest.raises(ValueError, match=message):
        load_key(key, algorithm=algorithm)


def test_an_hs256_secret_is_accepted_as_bytes_or_str() -> None:
    """The tutorial shape: key=secret, algorithm="HS256" (32 bytes at least, RFC 7518 3.2)."""
    assert load_key(b"s" * 32, algorithm="HS256").alg == "HS256"
    assert load_key("s" * 32, algorithm="HS256").key == b"s" * 32


def test_a_jwk_pins_its_own_kid_and_alg() -> None:
    """A JWK's kid and alg carry over; a conflicting algorithm= or kid= is refused."""
    jwk = jwk_of(EC_KEY, "ES256", kid="k1")
    key = key_from_jwk(jwk)
    assert (key.kid, key.alg) == ("k1", "ES256")
    with pytest.raises(ValueError, match="ES256, not RS256"):
        key_from_jwk(jwk, algorithm="RS256")
    with pytest.raises(ValueError, match="kid"):
        key_from_jwk(jwk, kid="k2")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"alg": None}, "no asymmetric alg"),
        ({"alg": "HS256"}, "no asymmetric alg"),
        ({"alg": "none"}, "no asymmetric alg"),
        ({"alg": "ES384"}, "ES384"),
        ({"alg": "RS256"}, "RS256"),
        ({"use": "enc"}, "use"),
        ({"key_ops": ["sign"]}, "key_ops"),
        ({"d": "AAAA"}, "private"),
        ({"x": "AAAA"}, "ES256"),
        ({"crv": "P-384"}, "ES256"),
    ],
    ids=lambda value: str(value),
)
def test_unfit_published_keys_are_refused(change: dict[str, Any], reason: str) -> None:
    """A published key needs its own asymmetric alg, fitting key material, no private part."""
    jwk = {**jwk_of(EC_KEY, "ES256", kid="k1"), **change}
    jwk = {name: value for name, value in jwk.items() if value is not None}
    with pytest.raises(ValueError, match=reason):
        key_from_jwk(jwk, published=True)


def test_a_jwks_keeps_only_pinnable_keys_and_says_why() -> None:
    """Keys without kid or alg, symmetric ones, or sharing a kid are skipped, the rest kept."""
    good = jwk_of(EC_KEY, "ES256", kid="good")
    ed = jwk_of(ED_KEY, "EdDSA", kid="ed")
    document = {
        "keys": [
            good,
            ed,
            {k: v for k, v in jwk_of(EC_KEY, "ES256").items() if k != "kid"},
            jwk_of(EC_KEY, "ES256", kid="no-alg") | {"alg": ""},
            {
                "kty": "oct",
                "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
                "alg": "HS256",
                "kid": "hs",
            },
            {"kty": "EC", "alg": "none", "kid": "none"},
            jwk_of(RSA_KEY, "RS256", kid="twice"),
            jwk_of(EC_KEY, "ES256", kid="twice"),
            "not an object",
        ]
    }
    keys, cache, skipped = keys_from_jwks(document, {})
    assert sorted(keys) == ["ed", "good"]
    assert len(skipped) == 6  # the two "twice" keys give one reason
    assert any("twice" in reason for reason in skipped)
    again, _, _ = keys_from_jwks(document, cache)
    assert again["good"] is keys["good"]  # parsed once, reused on the next fetch


@pytest.mark.parametrize("document", [[], {}, {"keys": {}}, "keys", None])
def test_a_document_that_is_not_a_jwk_set_is_an_error(document: Any) -> None:
    """Not a JWK Set at all: ValueError, so the fetch counts as failed and old keys stay."""
    with pytest.raises(ValueError, match="JWK Set"):
        keys_from_jwks(document, {})


def test_corpus_jwk_matches_pyjwt() -> None:
    """Sanity: the corpus's hand-made JWK equals PyJWT's, so thumbprints agree."""
    jwk = jwk_of(EC_KEY, "ES256")
    assert {k: jwk[k] for k in ("kty", "crv", "x", "y")} == public_jwk(EC_KEY)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_every_key_tokenward_publishes_is_usable(servers: Any, alg: str) -> None:
    """The real server's JWKS, for each asymmetric algorithm, yields one pinned key per kid."""
    document = servers.get(alg).jwks()
    keys, _, skipped = keys_from_jwks(document, {})
    assert skipped == []
    assert keys and all(key.alg == alg for key in keys.values())
