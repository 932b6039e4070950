"""Hand-built tokens and what a verifier must say about each: tokenward's refusal corpus.

The cases mirror tests/test_access_tokens.py (which drives them through GET /auth/me) so that
the core can be held to the server's rules without HTTP, and both can be compared directly.
Tokens are built byte by byte (JWS compact, ES256 as raw r||s) so each case controls the exact
header and payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ISSUER = "http://127.0.0.1:8000"
NOW = 1_800_000_000
LEEWAY = 30
MAX_LENGTH = 8192
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
DROP = object()
"""As a value in :meth:`Forger.header` or :meth:`Forger.claims`: leave the member out."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: the kid tokenward gives a key."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def es256(key: ec.EllipticCurvePrivateKey, signing_input: str) -> bytes:
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class Forger:
    """Makes tokens with the real key (or another) for one issuer at the fixed time NOW."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.jwk = public_jwk(self.key)
        self.kid = thumbprint(self.jwk)

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def header(self, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        header.update(changes)
        return {name: value for name, value in header.items() if value is not DROP}

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "user-1",
            "iat": NOW,
            "exp": NOW + 300,
            "jti": "jti-1",
            "sid": "session-1",
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not DROP}

    def raw(self, header_json: str, payload_json: str, key: Any = None) -> str:
        """Sign exactly these JSON texts."""
        signing_input = f"{b64url(header_json.encode())}.{b64url(payload_json.encode())}"
        return f"{signing_input}.{b64url(es256(key or self.key, signing_input))}"

    def sign(self, header: Any = None, claims: Any = None, key: Any = None) -> str:
        header = self.header() if header is None else header
        claims = self.claims() if claims is None else claims
        compact = {"separators": (",", ":")}
        return self.raw(json.dumps(header, **compact), json.dumps(claims, **compact), key)

    def segments(self, header_segment: str, payload_segment: str) -> str:
        """Sign these exact segments (whatever they decode to)."""
        signing_input = f"{header_segment}.{payload_segment}"
        return f"{signing_input}.{b64url(es256(self.key, signing_input))}"

    def tampered(self, tamper: Callable[[bytes], bytes]) -> str:
        header_segment, payload_segment = b64json(self.header()), b64json(self.claims())
        real = es256(self.key, f"{header_segment}.{payload_segment}")
        return f"{header_segment}.{payload_segment}.{b64url(tamper(real))}"

    def hs256(self, secret: bytes) -> str:
        signing_input = f"{b64json(self.header(alg='HS256'))}.{b64json(self.claims())}"
        mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    def padded(self, *, over_limit: bool) -> str:
        """A validly signed token just over (or at most) MAX_LENGTH characters."""
        header_segment = b64json(self.header())
        chosen = None
        for pad in range(MAX_LENGTH * 3 // 4 - 500, MAX_LENGTH):
            claims = self.claims(pad="p" * pad)
            length = len(header_segment) + 1 + len(b64json(claims)) + 1 + 86
            if length > MAX_LENGTH:
                if over_limit:
                    chosen = claims
                break
            chosen = claims
        return self.sign(claims=chosen)


@dataclass(frozen=True)
class Case:
    """One token and the verdict: ``reason`` None means accepted."""

    id: str
    make: Callable[[Forger], str]
    reason: str | None
    audience: str | None = None
    stricter_than_pyjwt: bool = False
    """Refused on purpose though PyJWT's own decoding (the server's before it called the core)
    accepts it."""


def _flip(signature: bytes) -> bytes:
    return signature[:10] + bytes([signature[10] ^ 0x01]) + signature[11:]


def _der(signature: bytes) -> bytes:
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    return encode_dss_signature(r, s)


def _high_r(signature: bytes) -> bytes:
    r = int.from_bytes(signature[:32], "big") + P256_ORDER
    return r.to_bytes(33, "big") + signature[32:]


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "byte-flipped": _flip,
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


def _attacker() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _forbidden(name: str) -> Any:
    attacker = _attacker()
    return {
        "jku": "https://attacker.example/.well-known/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": public_jwk(attacker),
        "x5c": ["MIIBfake"],
        "x5t": b64url(hashlib.sha256(b"cert").digest()[:20]),
        "x5t#S256": b64url(hashlib.sha256(b"cert").digest()),
        "crit": ["exp"],
    }[name]


def _non_canonical(token: str) -> str:
    """The same bytes spelled with a non-zero unused bit in the signature's last character."""
    head, _, signature = token.rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) | 1]
    return f"{head}.{signature[:-1]}{last}"


def _cases() -> list[Case]:
    cases = [
        Case("control", lambda f: f.sign(), None),
        Case("unicode-claims", lambda f: f.sign(claims=f.claims(sub="zoë-☃")), None),
        Case("extra-claims", lambda f: f.sign(claims=f.claims(email="a@b.c", n={"x": [1]})), None),
        Case("size-at-limit", lambda f: f.padded(over_limit=False), None),
        Case("size-over-limit", lambda f: f.padded(over_limit=True), "too_long"),
        Case("huge", lambda f: "A" * 100_000, "too_long"),
    ]
    for raw in [
        "",
        "this-is-garbage",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0",
        "eyJhbGciOiJFUzI1NiJ9",
        "eyJhbGciOiJFUzI1NiJ9.e30.c2ln.ZXh0cmE",
        "..",
        "!!!!.@@@@.####",
        "a b",
        b64url(b"\xff\xfe\xfd") + ".e30.c2ln",
        b64url(b"{not json") + ".e30.c2ln",
        "twr_AAAAAAAAAAAAAAAAAAAAAAAA",
        "eyJhbGciOiJFUzI1NiJ9.e30.c2ln\n",
        "é.e30.c2ln",
    ]:
        cases.append(Case(f"malformed-{raw[:12]!r}", lambda f, raw=raw: raw, "malformed"))
    for header_json in ["[1, 2]", '"ES256"', "null", "42", "true"]:
        cases.append(
            Case(
                f"header-{header_json}",
                lambda f, h=header_json: f.raw(h, json.dumps(f.claims())),
                "malformed",
            )
        )
    for payload in [b"[1, 2]", b'"claims"', b"null", b"{not json", b"\xff\xfe", b'{"exp": NaN}']:
        cases.append(
            Case(
                f"payload-{payload!r}",
                lambda f, p=payload: f.segments(b64json(f.header()), b64url(p)),
                "malformed",
            )
        )
    cases.append(
        Case(
            "payload-base64-garbage",
            lambda f: f.segments(b64json(f.header()), "e30!!!*"),
            "malformed",
        )
    )
    cases.append(
        Case(
            "payload-utf16",
            lambda f: f.segments(
                b64json(f.header()), b64url(json.dumps(f.claims()).encode("utf-16"))
            ),
            "malformed",
            stricter_than_pyjwt=True,  # JWT claims are UTF-8 (RFC 7519 7.2)
        )
    )
    cases.append(
        Case(
            "payload-deeply-nested",
            lambda f: f.segments(b64json(f.header()), b64url(b"[" * 2000 + b"]" * 2000)),
            "malformed",
        )
    )
    # time
    cases += [
        Case(
            "expired-long-ago",
            lambda f: f.sign(claims=f.claims(iat=NOW - 7200, exp=NOW - 3600)),
            "expired",
        ),
        Case(
            "expired-beyond-leeway",
            lambda f: f.sign(claims=f.claims(iat=NOW - 900, exp=NOW - 2 * LEEWAY)),
            "expired",
        ),
        Case(
            "expired-at-leeway",
            lambda f: f.sign(claims=f.claims(iat=NOW - 900, exp=NOW - LEEWAY)),
            "expired",
        ),
        Case(
            "expired-within-leeway",
            lambda f: f.sign(claims=f.claims(iat=NOW - 900, exp=NOW - 10)),
            None,
        ),
        Case("iat-future", lambda f: f.sign(claims=f.claims(iat=NOW + 120)), "not_yet_valid"),
        Case("iat-future-within-leeway", lambda f: f.sign(claims=f.claims(iat=NOW + 5)), None),
        Case("nbf-future", lambda f: f.sign(claims=f.claims(nbf=NOW + 120)), "not_yet_valid"),
        Case("nbf-within-leeway", lambda f: f.sign(claims=f.claims(nbf=NOW + 5)), None),
        Case("nbf-null", lambda f: f.sign(claims=f.claims(nbf=None)), "invalid_claim"),
    ]
    # signatures
    cases.append(Case("other-key-same-kid", lambda f: f.sign(key=_attacker()), "bad_signature"))
    for name, tamper in TAMPERINGS.items():
        cases.append(Case(f"signature-{name}", lambda f, t=tamper: f.tampered(t), "bad_signature"))
    cases.append(Case("payload-changed", lambda f: _swap_payload(f), "bad_signature"))
    for alg in ["none", "None", "NONE", "nOnE"]:
        for sig in ["empty", "real", "garbage"]:
            cases.append(
                Case(f"alg-{alg}-{sig}", lambda f, a=alg, s=sig: _alg_none(f, a, s), "alg_mismatch")
            )
    for alg in [
        "es256",
        "ES384",
        "ES512",
        "ES256K",
        "RS256",
        "PS256",
        "EdDSA",
        "HS256",
        "",
        None,
        DROP,
    ]:
        ident = "missing" if alg is DROP else repr(alg)
        cases.append(
            Case(f"alg-{ident}", lambda f, a=alg: f.sign(header=f.header(alg=a)), "alg_mismatch")
        )
    secrets: dict[str, Callable[[Forger], bytes]] = {
        "public-pem": lambda f: f.public_pem,
        "public-pem-stripped": lambda f: f.public_pem.strip(),
        "public-der": lambda f: f.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-x": lambda f: f.jwk["x"].encode(),
        "jwk-json": lambda f: json.dumps(f.jwk).encode(),
        "kid": lambda f: f.kid.encode(),
    }
    for name, secret in secrets.items():
        cases.append(
            Case(f"hs256-confusion-{name}", lambda f, s=secret: f.hs256(s(f)), "alg_mismatch")
        )
    # header parameters
    for typ in [
        "JWT",
        "jwt",
        DROP,
        "refresh+jwt",
        "",
        "at+jwt; x",
        "application/jwt",
        None,
        ["at+jwt"],
    ]:
        ident = "missing" if typ is DROP else repr(typ)
        cases.append(
            Case(f"typ-{ident}", lambda f, t=typ: f.sign(header=f.header(typ=t)), "bad_typ")
        )
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"]:
        cases.append(Case(f"typ-ok-{typ}", lambda f, t=typ: f.sign(header=f.header(typ=t)), None))
    for kid in ["another-key", DROP, "", "../../etc/passwd", "' OR 1=1 --", None, 42]:
        ident = "missing" if kid is DROP else repr(kid)
        cases.append(
            Case(f"kid-{ident}", lambda f, k=kid: f.sign(header=f.header(kid=k)), "unknown_kid")
        )
    cases.append(
        Case("kid-swapcase", lambda f: f.sign(header=f.header(kid=f.kid.swapcase())), "unknown_kid")
    )
    for name in ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"]:
        cases.append(
            Case(
                f"header-{name}",
                lambda f, n=name: f.sign(header=f.header(**{n: _forbidden(n)})),
                "forbidden_header",
            )
        )
        cases.append(
            Case(
                f"header-{name}-attacker-signed",
                lambda f, n=name: f.sign(header=f.header(**{n: _forbidden(n)}), key=_attacker()),
                "forbidden_header",
            )
        )
    cases.append(
        Case(
            "crit-unknown",
            lambda f: f.sign(header=f.header(crit=["urn:x"], **{"urn:x": True})),
            "forbidden_header",
        )
    )
    cases.append(
        Case("b64-false", lambda f: f.sign(header=f.header(b64=False)), "forbidden_header")
    )
    cases.append(Case("b64-true", lambda f: f.sign(header=f.header(b64=True)), None))
    # claims
    for iss in ["https://attacker.example", ISSUER + "/", ISSUER.upper(), "", ["x"]]:
        cases.append(
            Case(f"iss-{iss!r}", lambda f, i=iss: f.sign(claims=f.claims(iss=i)), "bad_issuer")
        )
    for aud in ["api://x", ISSUER, ["api://x", "api://y"], "", []]:
        cases.append(
            Case(
                f"aud-unexpected-{aud!r}",
                lambda f, a=aud: f.sign(claims=f.claims(aud=a)),
                "bad_audience",
            )
        )
    cases.append(Case("aud-null-unexpected", lambda f: f.sign(claims=f.claims(aud=None)), None))
    for claim in ["sub", "sid", "jti", "exp", "iat", "iss"]:
        cases.append(
            Case(
                f"missing-{claim}",
                lambda f, c=claim: f.sign(claims=f.claims(**{c: DROP})),
                "missing_claim",
            )
        )
        cases.append(
            Case(
                f"null-{claim}",
                lambda f, c=claim: f.sign(claims=f.claims(**{c: None})),
                "missing_claim",
            )
        )
    for changes in [
        {"exp": "soon"},
        {"exp": "9999999999"},
        {"exp": 9999999999.5},
        {"exp": True},
        {"exp": [9999999999]},
        {"iat": "now"},
        {"iat": True},
        {"iat": 1.5},
        {"nbf": "later"},
        {"nbf": False},
        {"sub": 123},
        {"sub": ""},
        {"sub": ["x"]},
        {"sid": 42},
        {"sid": ""},
        {"jti": 7},
        {"jti": ""},
        {"sub": {"id": 1}},
    ]:
        cases.append(
            Case(
                f"mistyped-{changes!r}",
                lambda f, c=changes: f.sign(claims=f.claims(**c)),
                "invalid_claim",
            )
        )
    cases.append(
        Case(
            "duplicate-claim",
            lambda f: f.raw(
                json.dumps(f.header()), json.dumps(f.claims())[:-1] + ', "sub": "user-1"}'
            ),
            "malformed",
        )
    )
    cases.append(
        Case(
            "duplicate-nested-claim",
            lambda f: f.raw(
                json.dumps(f.header()), json.dumps(f.claims())[:-1] + ', "x": {"a": 1, "a": 2}}'
            ),
            "malformed",
        )
    )
    cases.append(
        Case(
            "duplicate-header",
            lambda f: f.raw(
                json.dumps(f.header())[:-1] + ', "typ": "at+jwt"}', json.dumps(f.claims())
            ),
            "malformed",
        )
    )
    # audience configured
    aud = "api://x"
    cases += [
        Case("aud-ok", lambda f: f.sign(claims=f.claims(aud="api://x")), None, aud),
        Case(
            "aud-ok-in-list",
            lambda f: f.sign(claims=f.claims(aud=["api://y", "api://x"])),
            None,
            aud,
        ),
        Case("aud-missing", lambda f: f.sign(), "missing_claim", aud),
    ]
    for value, reason in [
        ("api://y", "bad_audience"),
        ("api://x/", "bad_audience"),
        ("API://X", "bad_audience"),
        ("", "missing_claim"),
        (["api://y"], "bad_audience"),
        ([], "missing_claim"),
        (None, "missing_claim"),
        (7, "invalid_claim"),
        (["api://x", 7], "invalid_claim"),
    ]:
        cases.append(
            Case(
                f"aud-wrong-{value!r}",
                lambda f, v=value: f.sign(claims=f.claims(aud=v)),
                reason,
                aud,
            )
        )
    # scope and roles
    cases += [
        Case("scope-and-roles", lambda f: f.sign(claims=f.claims(scope="a b", roles=["r"])), None),
        Case(
            "scope-mistyped",
            lambda f: f.sign(claims=f.claims(scope=["a"])),
            "invalid_claim",
            None,
            True,
        ),
        Case(
            "roles-mistyped",
            lambda f: f.sign(claims=f.claims(roles="admin")),
            "invalid_claim",
            None,
            True,
        ),
        Case(
            "roles-item-mistyped",
            lambda f: f.sign(claims=f.claims(roles=["a", 1])),
            "invalid_claim",
            None,
            True,
        ),
        # One token, two spellings: only the canonical one (RFC 4648 3.5), as PyJWT does.
        Case("non-canonical-base64", lambda f: _non_canonical(f.sign()), "malformed"),
        # JWS omits base64 padding (RFC 7515 2); PyJWT tolerates it for AWS ALB tokens.
        Case("padded-signature", lambda f: f.sign() + "==", "malformed", None, True),
    ]
    return cases


def _swap_payload(f: Forger) -> str:
    header_segment, claims = b64json(f.header()), f.claims()
    real = es256(f.key, f"{header_segment}.{b64json(claims)}")
    return f"{header_segment}.{b64json({**claims, 'exp': claims['exp'] + 86400})}.{b64url(real)}"


def _alg_none(f: Forger, alg: str, signature: str) -> str:
    header_segment, payload_segment = b64json(f.header(alg=alg)), b64json(f.claims())
    raw = {
        "empty": b"",
        "real": es256(f.key, f"{header_segment}.{payload_segment}"),
        "garbage": b"signature",
    }[signature]
    return f"{header_segment}.{payload_segment}.{b64url(raw)}"


CASES = _cases()
