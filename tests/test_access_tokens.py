"""Every access token GET /auth/me must refuse, and the few near-misses it must accept.

Forged tokens are built by hand (JWS compact serialisation, ES256 as raw r||s) so that each
case controls the exact header and payload bytes; PyJWT would refuse to encode some of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from support import Api

from tokenward.core.tokens import LEEWAY_SECONDS, MAX_TOKEN_LENGTH

PROBLEM_JSON = "application/problem+json"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
DROP = object()
"""Passed as a value to :meth:`Victim.header` or :meth:`Victim.claims`: leave the member out."""


# -- JWS by hand ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def es256_signature(private_key: ec.EllipticCurvePrivateKey, signing_input: str) -> bytes:
    """An ES256 JWS signature: raw big-endian r||s, 32 bytes each (RFC 7518 3.4)."""
    der = private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def compact(header_segment: str, payload_segment: str, signature: bytes) -> str:
    return f"{header_segment}.{payload_segment}.{b64url(signature)}"


def es256_jws(header: Any, claims: Any, key: ec.EllipticCurvePrivateKey) -> str:
    """Sign exactly these header and payload JSON values with ``key``."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    return f"{signing_input}.{b64url(es256_signature(key, signing_input))}"


def hs256_jws(header: Any, claims: Any, secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def attacker_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def self_signed_cert(key: ec.EllipticCurvePrivateKey) -> str:
    """A base64 (not url) DER certificate, as an ``x5c`` entry carries it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


# -- the victim: a real user with a real session -------------------------------------------------


@dataclass
class Victim:
    api: Api
    service: Any
    email: str
    user_id: str
    session_id: str
    access_token: str
    refresh_token: str

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return self.service.signing_keys.signing_key.private_key

    @property
    def kid(self) -> str:
        return self.service.signing_keys.signing_key.kid

    def header(self, **changes: Any) -> dict[str, Any]:
        """The header the server itself writes, with ``changes`` applied."""
        header: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        header.update(changes)
        return {name: value for name, value in header.items() if value is not DROP}

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Valid claims for this user's session, with ``changes`` applied."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.service.settings.issuer,
            "sub": self.user_id,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "sid": self.session_id,
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not DROP}

    def sign(self, header: Any = None, claims: Any = None) -> str:
        """A token signed with the server's real key."""
        header = self.header() if header is None else header
        claims = self.claims() if claims is None else claims
        return es256_jws(header, claims, self.key)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never come back in an error answer."""
        return (self.user_id, self.session_id, self.email, self.refresh_token)


@pytest.fixture
async def victim(api: Api, service: Any) -> Victim:
    email = "victim@example.com"
    access, refresh = await api.signed_up(email)
    me = await api.me(access)
    assert me.status_code == 200, me.text
    sid = jwt.decode(access, options={"verify_signature": False})["sid"]
    return Victim(api, service, email, me.json()["id"], sid, access, refresh)


# -- assertions ----------------------------------------------------------------------------------


def assert_problem_without(response: httpx.Response, secrets: tuple[str, ...]) -> None:
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == PROBLEM_JSON, content_type
    assert response.json()["status"] == 401
    exposed = response.text + response.headers.get("www-authenticate", "")
    for secret in secrets:
        if len(secret) >= 4:  # shorter strings ("a b") would match the problem's own words
            assert secret not in exposed, f"{secret[:40]!r} leaked into the error answer"


def assert_invalid_token(
    response: httpx.Response, token: str | None = None, *values: Any, victim: Victim | None = None
) -> None:
    """401, a Bearer challenge with error="invalid_token", and problem+json that leaks nothing."""
    assert response.status_code == 401, response.text
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer"), challenge
    assert 'error="invalid_token"' in challenge, challenge
    secrets = [str(value) for value in values]
    if token is not None:
        secrets.append(token)
        secrets.extend(part for part in token.split(".") if len(part) >= 8)
    if victim is not None:
        secrets.extend(victim.secrets)
    assert_problem_without(response, tuple(secrets))


async def assert_token_refused(
    victim: Victim, token: str, claims: dict[str, Any] | None = None
) -> None:
    """GET /auth/me with ``token`` is refused, and no claim value comes back."""
    values = [value for value in (claims or {}).values() if value is not None]
    assert_invalid_token(await victim.api.me(token), token, *values, victim=victim)


async def assert_token_accepted(victim: Victim, token: str) -> None:
    response = await victim.api.me(token)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == victim.user_id
    assert response.json()["email"] == victim.email


# -- positive controls ---------------------------------------------------------------------------


async def test_the_server_token_is_accepted(victim: Victim) -> None:
    """The access token from login gives 200 with the user's id and email."""
    await assert_token_accepted(victim, victim.access_token)


async def test_a_token_forged_with_the_real_key_is_accepted(victim: Victim) -> None:
    """The hand-built JWS with the real key passes: the helpers make valid tokens."""
    await assert_token_accepted(victim, victim.sign())


async def test_a_token_issued_by_the_codec_is_accepted(victim: Victim) -> None:
    """service.access.issue() for the victim's session passes."""
    token = victim.service.access.issue(
        user_id=victim.user_id, session_id=victim.session_id, now=victim.service.now().timestamp()
    )
    await assert_token_accepted(victim, token)


# -- the Authorization header ---------------------------------------------------------------------


async def test_no_authorization_header_gets_a_challenge_without_error_code(api: Api) -> None:
    """No credentials at all: 401 with `Bearer realm="tokenward"` and no error (RFC 6750 3.1)."""
    response = await api.http.get("/auth/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="tokenward"'
    assert "error=" not in response.headers["www-authenticate"]
    assert_problem_without(response, ())


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic " + base64.b64encode(b"victim@example.com:pw").decode(), id="basic"),
        pytest.param("Bearer", id="bearer-nothing"),
        pytest.param("Bearer ", id="bearer-space"),
        pytest.param("Bearer a b", id="bearer-two-words"),
        pytest.param("Bearer this-is-garbage-not-a-jwt", id="garbage"),
        pytest.param("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0", id="two-segments"),
        pytest.param("Bearer eyJhbGciOiJFUzI1NiJ9", id="one-segment"),
        pytest.param("Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln.ZXh0cmE", id="four-segments"),
        pytest.param("Bearer ..", id="empty-segments"),
        pytest.param("Bearer !!!!.@@@@.####", id="malformed-base64"),
        pytest.param("Bearer " + b64url(b"\xff\xfe\xfd") + ".e30.c2ln", id="header-not-utf8"),
        pytest.param("Bearer " + b64url(b"{not json") + ".e30.c2ln", id="header-not-json"),
    ],
)
async def test_malformed_authorization_is_refused(victim: Victim, authorization: str) -> None:
    """A header that carries no parseable bearer JWT is refused with invalid_token."""
    response = await victim.api.http.get("/auth/me", headers={"Authorization": authorization})
    token = authorization.partition(" ")[2]
    assert_invalid_token(response, token if len(token) >= 8 else None, victim=victim)


@pytest.mark.parametrize("header_json", ["[1, 2]", '"ES256"', "null", "42", "true"])
async def test_header_json_not_an_object_is_refused(victim: Victim, header_json: str) -> None:
    """A JOSE header that is valid JSON but not an object is refused."""
    header_segment = b64url(header_json.encode())
    payload_segment = b64json(victim.claims())
    signing_input = f"{header_segment}.{payload_segment}"
    token = compact(header_segment, payload_segment, es256_signature(victim.key, signing_input))
    await assert_token_refused(victim, token)


@pytest.mark.parametrize(
    "payload_bytes",
    [b"[1, 2]", b'"claims"', b"null", b"{not json", b"\xff\xfe"],
    ids=["array", "string", "null", "not-json", "not-utf8"],
)
async def test_payload_not_a_json_object_is_refused(victim: Victim, payload_bytes: bytes) -> None:
    """A correctly signed token whose payload is not a JSON object is refused."""
    header_segment = b64json(victim.header())
    payload_segment = b64url(payload_bytes)
    signing_input = f"{header_segment}.{payload_segment}"
    token = compact(header_segment, payload_segment, es256_signature(victim.key, signing_input))
    await assert_token_refused(victim, token)


async def test_payload_with_malformed_base64_is_refused(victim: Victim) -> None:
    """A correctly signed token whose payload segment is not base64url is refused."""
    header_segment = b64json(victim.header())
    payload_segment = "e30!!!*"
    signing_input = f"{header_segment}.{payload_segment}"
    token = compact(header_segment, payload_segment, es256_signature(victim.key, signing_input))
    await assert_token_refused(victim, token)


def _padded_token(victim: Victim, *, over_limit: bool) -> str:
    """A validly signed token just over (or at most) MAX_TOKEN_LENGTH characters long."""
    header_segment = b64json(victim.header())
    base = victim.claims(pad="")
    chosen = None
    # base64url turns 3 bytes into 4 characters: start the search a little below the limit.
    for pad in range(MAX_TOKEN_LENGTH * 3 // 4 - 500, MAX_TOKEN_LENGTH):
        claims = {**base, "pad": "p" * pad}
        # The signature segment of ES256 is always 86 characters.
        length = len(header_segment) + 1 + len(b64json(claims)) + 1 + 86
        if length > MAX_TOKEN_LENGTH:
            if over_limit:
                chosen = claims
            break
        chosen = claims
    assert chosen is not None
    token = victim.sign(claims=chosen)
    assert (len(token) > MAX_TOKEN_LENGTH) is over_limit
    return token


async def test_a_validly_signed_token_over_8_kib_is_refused(victim: Victim) -> None:
    """A correctly signed token a few bytes longer than 8192 characters is refused unparsed."""
    token = _padded_token(victim, over_limit=True)
    assert len(token) <= MAX_TOKEN_LENGTH + 3
    await assert_token_refused(victim, token)


async def test_a_validly_signed_token_at_the_size_limit_is_accepted(victim: Victim) -> None:
    """Contrast: the longest token that fits in 8192 characters still passes."""
    token = _padded_token(victim, over_limit=False)
    assert len(token) >= MAX_TOKEN_LENGTH - 3
    await assert_token_accepted(victim, token)


@pytest.mark.parametrize("size", [MAX_TOKEN_LENGTH + 17, 100_000, 1_000_000])
async def test_a_huge_token_is_refused(victim: Victim, size: int) -> None:
    """A huge token (far beyond 8 KiB) is refused with invalid_token, not a 4xx/5xx of its own."""
    token = "A" * size
    assert_invalid_token(await victim.api.me(token), victim=victim)


# -- time ----------------------------------------------------------------------------------------


async def test_an_expired_token_is_refused(victim: Victim) -> None:
    """A token issued long ago, expired well beyond the 30 s leeway, is refused."""
    ttl = victim.service.access.ttl_seconds
    issued_at = time.time() - ttl - 3600
    token = victim.service.access.issue(
        user_id=victim.user_id, session_id=victim.session_id, now=issued_at
    )
    await assert_token_refused(victim, token)


async def test_a_token_expired_just_beyond_the_leeway_is_refused(victim: Victim) -> None:
    """A token whose exp is 2 x leeway in the past is refused."""
    now = int(time.time())
    token = victim.sign(claims=victim.claims(iat=now - 600, exp=now - 2 * LEEWAY_SECONDS))
    await assert_token_refused(victim, token)


async def test_a_token_expired_within_the_leeway_is_accepted(victim: Victim) -> None:
    """Contrast: a token expired by less than the 30 s leeway still passes (clock skew)."""
    ttl = victim.service.access.ttl_seconds
    issued_at = time.time() - ttl - 10
    token = victim.service.access.issue(
        user_id=victim.user_id, session_id=victim.session_id, now=issued_at
    )
    assert jwt.decode(token, options={"verify_signature": False})["exp"] < time.time()
    await assert_token_accepted(victim, token)


async def test_iat_in_the_future_beyond_the_leeway_is_refused(victim: Victim) -> None:
    """A token issued two minutes in the future is refused."""
    now = int(time.time())
    await assert_token_refused(victim, victim.sign(claims=victim.claims(iat=now + 120)))


async def test_iat_in_the_future_within_the_leeway_is_accepted(victim: Victim) -> None:
    """Contrast: iat a few seconds ahead (clock skew) passes."""
    now = int(time.time())
    await assert_token_accepted(victim, victim.sign(claims=victim.claims(iat=now + 5)))


async def test_nbf_in_the_future_beyond_the_leeway_is_refused(victim: Victim) -> None:
    """A token not valid before two minutes from now is refused."""
    now = int(time.time())
    await assert_token_refused(victim, victim.sign(claims=victim.claims(nbf=now + 120)))


async def test_nbf_within_the_leeway_is_accepted(victim: Victim) -> None:
    """Contrast: nbf a few seconds ahead (clock skew) passes."""
    now = int(time.time())
    await assert_token_accepted(victim, victim.sign(claims=victim.claims(nbf=now + 5)))


# -- signatures ----------------------------------------------------------------------------------


async def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(victim: Victim) -> None:
    """Another P-256 key claiming the server's kid does not verify."""
    token = es256_jws(victim.header(), victim.claims(), attacker_key())
    await assert_token_refused(victim, token)


def _flip_byte(signature: bytes) -> bytes:
    return signature[:10] + bytes([signature[10] ^ 0x01]) + signature[11:]


def _der(signature: bytes) -> bytes:
    return encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )


def _high_r(signature: bytes) -> bytes:
    r = int.from_bytes(signature[:32], "big") + P256_ORDER
    return r.to_bytes(33, "big") + signature[32:]


SIGNATURE_TAMPERING = {
    "byte-flipped": _flip_byte,
    "last-byte-flipped": lambda sig: sig[:-1] + bytes([sig[-1] ^ 0x80]),
    "empty": lambda _sig: b"",
    "zero-r-and-s": lambda _sig: bytes(64),  # CVE-2022-21449 ("psychic signatures")
    "r-and-s-equal-order": lambda _sig: P256_ORDER.to_bytes(32, "big") * 2,
    "zero-s": lambda sig: sig[:32] + bytes(32),
    "truncated": lambda sig: sig[:63],
    "extended": lambda sig: sig + b"\x00",
    "der-encoded": _der,
    "r-plus-order": _high_r,
    "swapped-r-s": lambda sig: sig[32:] + sig[:32],
}


@pytest.mark.parametrize("tamper", SIGNATURE_TAMPERING.values(), ids=SIGNATURE_TAMPERING.keys())
async def test_a_tampered_signature_is_refused(victim: Victim, tamper: Any) -> None:
    """A real signature altered (flipped, emptied, zeroed, re-encoded) does not verify."""
    header_segment, payload_segment = b64json(victim.header()), b64json(victim.claims())
    real = es256_signature(victim.key, f"{header_segment}.{payload_segment}")
    token = compact(header_segment, payload_segment, tamper(real))
    await assert_token_refused(victim, token)


async def test_a_payload_changed_after_signing_is_refused(victim: Victim) -> None:
    """The real signature over one payload does not cover another (here: a longer exp)."""
    header_segment = b64json(victim.header())
    claims = victim.claims()
    real = es256_signature(victim.key, f"{header_segment}.{b64json(claims)}")
    token = compact(header_segment, b64json({**claims, "exp": claims["exp"] + 86400}), real)
    await assert_token_refused(victim, token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["empty", "real-es256", "garbage"])
async def test_alg_none_is_refused(victim: Victim, alg: str, signature: str) -> None:
    """alg none, in any casing, with or without a signature, is refused."""
    header_segment = b64json(victim.header(alg=alg))
    payload_segment = b64json(victim.claims())
    raw = {
        "empty": b"",
        "real-es256": es256_signature(victim.key, f"{header_segment}.{payload_segment}"),
        "garbage": b"signature",
    }[signature]
    await assert_token_refused(victim, compact(header_segment, payload_segment, raw))


@pytest.mark.parametrize(
    "alg",
    ["es256", "ES384", "ES512", "ES256K", "RS256", "PS256", "EdDSA", "HS256", "", None, DROP],
    ids=[
        "es256",
        "ES384",
        "ES512",
        "ES256K",
        "RS256",
        "PS256",
        "EdDSA",
        "HS256",
        "empty",
        "null",
        "missing",
    ],
)
async def test_any_alg_but_es256_is_refused_even_with_a_valid_es256_signature(
    victim: Victim, alg: Any
) -> None:
    """The algorithm is pinned: another alg name is refused though the bytes verify as ES256."""
    await assert_token_refused(victim, victim.sign(header=victim.header(alg=alg)))


def _public_pem(victim: Victim) -> bytes:
    return victim.service.signing_keys.signing_key.verify_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


HMAC_SECRETS = {
    "public-pem": _public_pem,
    "public-pem-stripped": lambda victim: _public_pem(victim).strip(),
    "public-der": lambda victim: victim.service.signing_keys.signing_key.verify_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
    "jwk-x": lambda victim: victim.service.signing_keys.signing_key.public_jwk["x"].encode(),
    "jwk-x-decoded": lambda victim: base64.urlsafe_b64decode(
        victim.service.signing_keys.signing_key.public_jwk["x"] + "="
    ),
    "jwk-json": lambda victim: json.dumps(
        victim.service.signing_keys.signing_key.public_jwk
    ).encode(),
    "kid": lambda victim: victim.kid.encode(),
}


@pytest.mark.parametrize("secret", HMAC_SECRETS.values(), ids=HMAC_SECRETS.keys())
async def test_hs256_key_confusion_is_refused(victim: Victim, secret: Any) -> None:
    """HS256 with the public key (PEM, DER, JWK x) as the HMAC secret is refused."""
    token = hs256_jws(victim.header(alg="HS256"), victim.claims(), secret(victim))
    await assert_token_refused(victim, token)


# -- header parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typ",
    ["JWT", "jwt", DROP, "refresh+jwt", "", "at+jwt; x", "application/jwt", None, ["at+jwt"]],
    ids=["JWT", "jwt", "missing", "refresh+jwt", "empty", "suffix", "app-jwt", "null", "list"],
)
async def test_a_wrong_typ_is_refused(victim: Victim, typ: Any) -> None:
    """Only typ at+jwt (RFC 9068) is an access token; JWT, refresh+jwt or none are refused."""
    await assert_token_refused(victim, victim.sign(header=victim.header(typ=typ)))


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_the_access_token_typ_spellings_are_accepted(victim: Victim, typ: str) -> None:
    """Contrast: at+jwt (case-insensitive) and application/at+jwt pass (RFC 9068 2.1)."""
    await assert_token_accepted(victim, victim.sign(header=victim.header(typ=typ)))


@pytest.mark.parametrize(
    "kid",
    [
        "another-key",
        DROP,
        "",
        "../../etc/passwd",
        "../../../../../../dev/null",
        "' OR 1=1 --",
        "x'; DROP TABLE users; --",
        None,
        42,
    ],
    ids=["other", "missing", "empty", "traversal", "dev-null", "sql", "sql-drop", "null", "int"],
)
async def test_a_wrong_kid_is_refused(victim: Victim, kid: Any) -> None:
    """Any kid but the server's is refused, even when the signature is real."""
    await assert_token_refused(victim, victim.sign(header=victim.header(kid=kid)))


async def test_a_kid_differing_in_case_is_refused(victim: Victim) -> None:
    """The kid is compared exactly: a case-changed kid is refused."""
    kid = victim.kid.swapcase()
    assert kid != victim.kid
    await assert_token_refused(victim, victim.sign(header=victim.header(kid=kid)))


def _forbidden_headers(attacker: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    thumb = b64url(hashlib.sha1(b"cert").digest())  # noqa: S324 - a header value, not security
    return {
        "jku": "https://attacker.example/.well-known/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": public_jwk(attacker),
        "x5c": [self_signed_cert(attacker)],
        "x5t": thumb,
        "x5t#S256": b64url(hashlib.sha256(b"cert").digest()),
        "crit": ["exp"],
    }


FORBIDDEN = ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"]


@pytest.mark.parametrize("name", FORBIDDEN)
async def test_a_forbidden_header_is_refused_even_with_the_real_signature(
    victim: Victim, name: str
) -> None:
    """Headers that pick a key or demand extensions are refused though the real key signed."""
    value = _forbidden_headers(attacker_key())[name]
    await assert_token_refused(victim, victim.sign(header=victim.header(**{name: value})))


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
async def test_a_token_naming_the_attackers_own_key_is_refused(victim: Victim, name: str) -> None:
    """The attacker embeds or points to their own key and signs with it: refused."""
    attacker = attacker_key()
    header = victim.header(**{name: _forbidden_headers(attacker)[name]})
    token = es256_jws(header, victim.claims(), attacker)
    await assert_token_refused(victim, token)


async def test_an_embedded_jwk_with_its_own_kid_is_refused(victim: Victim) -> None:
    """An embedded attacker JWK whose kid is its own RFC 7638 thumbprint is refused too."""
    attacker = attacker_key()
    jwk = public_jwk(attacker)
    members = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    kid = b64url(hashlib.sha256(members.encode()).digest())
    token = es256_jws(victim.header(kid=kid, jwk={**jwk, "kid": kid}), victim.claims(), attacker)
    await assert_token_refused(victim, token)


async def test_crit_naming_an_unknown_extension_is_refused(victim: Victim) -> None:
    """crit with an extension the server does not understand is refused (RFC 7515 4.1.11)."""
    header = victim.header(crit=["urn:example:unknown"], **{"urn:example:unknown": True})
    await assert_token_refused(victim, victim.sign(header=header))


# -- claims --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iss",
    [
        "https://attacker.example",
        "http://127.0.0.1:8000/",
        "HTTP://127.0.0.1:8000",
        "",
        None,
        ["http://127.0.0.1:8000"],
    ],
    ids=["other", "trailing-slash", "case", "empty", "null", "list"],
)
async def test_a_wrong_issuer_is_refused(victim: Victim, iss: Any) -> None:
    """Only this server's exact issuer is accepted."""
    assert victim.service.settings.issuer == "http://127.0.0.1:8000"
    claims = victim.claims(iss=iss)
    await assert_token_refused(victim, victim.sign(claims=claims), claims)


@pytest.mark.parametrize("aud", ["api://x", "http://127.0.0.1:8000", ["api://x", "api://y"]])
async def test_aud_present_without_a_configured_audience_is_refused(
    victim: Victim, aud: Any
) -> None:
    """With no audience configured, a token that names an audience was meant for someone else."""
    assert victim.service.settings.audience is None
    claims = victim.claims(aud=aud)
    await assert_token_refused(victim, victim.sign(claims=claims), claims)


@pytest.mark.parametrize("claim", ["sub", "sid", "jti", "exp", "iat", "iss"])
async def test_a_missing_required_claim_is_refused(victim: Victim, claim: str) -> None:
    """Each of sub, sid, jti, exp, iat and iss is required."""
    claims = victim.claims(**{claim: DROP})
    await assert_token_refused(victim, victim.sign(claims=claims), claims)


@pytest.mark.parametrize("claim", ["sub", "sid", "jti", "exp", "iat", "iss"])
async def test_a_null_required_claim_is_refused(victim: Victim, claim: str) -> None:
    """A required claim present as JSON null counts as missing."""
    claims = victim.claims(**{claim: None})
    await assert_token_refused(victim, victim.sign(claims=claims), claims)


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "soon"},
        {"exp": "9999999999"},
        {"exp": 9999999999.5},
        {"exp": True},
        {"exp": [9999999999]},
        {"iat": "now"},
        {"iat": True},
        {"iat": 1.5},
        {"nbf": "later"},
        {"sub": 123},
        {"sub": ""},
        {"sub": ["x"]},
        {"sid": 42},
        {"sid": ""},
        {"jti": 7},
        {"jti": ""},
    ],
    ids=lambda changes: "-".join(f"{k}={v!r}" for k, v in changes.items()),
)
async def test_a_mistyped_claim_is_refused(victim: Victim, changes: dict[str, Any]) -> None:
    """Claims of the wrong JSON type (exp "soon", sub 123, empty strings ...) are refused."""
    claims = victim.claims(**changes)
    await assert_token_refused(victim, victim.sign(claims=claims), claims)


async def test_another_users_subject_in_the_victims_session_is_refused(
    victim: Victim, api: Api
) -> None:
    """A validly signed token pairing one user's sub with another user's sid is refused."""
    other_access, _ = await api.signed_up("mallory@example.com")
    other_id = (await api.me(other_access)).json()["id"]
    claims = victim.claims(sub=other_id)
    await assert_token_refused(victim, victim.sign(claims=claims), claims)


@pytest.mark.parametrize("sid", ["random-uuid", "not-a-uuid", "' OR 1=1 --"])
async def test_an_unknown_session_is_refused(victim: Victim, sid: str) -> None:
    """A validly signed token for a session that does not exist is refused."""
    claims = victim.claims(sid=str(uuid.uuid4()) if sid == "random-uuid" else sid)
    await assert_token_refused(victim, victim.sign(claims=claims), claims)


# -- other kinds of token, ended sessions --------------------------------------------------------


async def test_a_refresh_token_is_not_an_access_token(victim: Victim) -> None:
    """The tw_refresh cookie value (twr_...) is refused at /auth/me."""
    assert victim.refresh_token.startswith("twr_")
    response = await victim.api.me(victim.refresh_token)
    assert_invalid_token(response, victim.refresh_token, victim=victim)


async def test_an_access_token_of_a_logged_out_session_is_refused(victim: Victim) -> None:
    """After logout the still-unexpired access token of that session gives 401."""
    await assert_token_accepted(victim, victim.access_token)
    assert (await victim.api.logout(victim.refresh_token)).status_code == 204
    await assert_token_refused(victim, victim.access_token)


async def test_logout_ends_only_that_session(victim: Victim, api: Api) -> None:
    """Contrast: another session of the same user still works after one logout."""
    second = await api.login(victim.email)
    assert second.status_code == 200
    assert (await api.logout(victim.refresh_token)).status_code == 204
    await assert_token_refused(victim, victim.access_token)
    await assert_token_accepted(victim, second.json()["access_token"])


# -- a server with an audience -------------------------------------------------------------------


class TestWithAudience:
    """The server is configured with audience api://x."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"audience": "api://x"}

    async def test_the_server_token_carries_the_audience_and_is_accepted(
        self, victim: Victim
    ) -> None:
        """Positive control: the login token has aud api://x and gives 200."""
        claims = jwt.decode(victim.access_token, options={"verify_signature": False})
        assert claims["aud"] == "api://x"
        await assert_token_accepted(victim, victim.access_token)

    async def test_a_token_without_aud_is_refused(self, victim: Victim) -> None:
        """A validly signed token with no aud is refused when an audience is configured."""
        claims = victim.claims()
        await assert_token_refused(victim, victim.sign(claims=claims), claims)

    @pytest.mark.parametrize(
        "aud", ["api://y", "api://x/", "API://X", "", ["api://y"], [], None, 7]
    )
    async def test_a_wrong_aud_is_refused(self, victim: Victim, aud: Any) -> None:
        """A validly signed token for another audience is refused."""
        claims = victim.claims(aud=aud)
        await assert_token_refused(victim, victim.sign(claims=claims), claims)


# -- duplicate member names (RFC 7515 5.2, RFC 8259 4) ---------------------------------------------


def _raw_jws(victim: Victim, header_json: str, payload_json: str) -> str:
    header_segment = b64url(header_json.encode())
    payload_segment = b64url(payload_json.encode())
    signature = es256_signature(victim.key, f"{header_segment}.{payload_segment}")
    return compact(header_segment, payload_segment, signature)


async def test_duplicate_claim_names_are_refused(victim: Victim) -> None:
    """Two readers could disagree on which one counts: refused even when both agree."""
    claims = victim.claims()
    body = json.dumps(claims)[:-1] + f', "sub": "{victim.user_id}"}}'
    token = _raw_jws(victim, json.dumps(victim.header()), body)
    await assert_token_refused(victim, token)


async def test_duplicate_header_names_are_refused(victim: Victim) -> None:
    header = json.dumps(victim.header())[:-1] + ', "typ": "at+jwt"}'
    token = _raw_jws(victim, header, json.dumps(victim.claims()))
    await assert_token_refused(victim, token)
