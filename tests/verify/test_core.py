"""The pure core against tokenward's refusal corpus, plus fuzzing: only VerificationError."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenward.verify import (
    Claims,
    ExpiredTokenError,
    VerificationError,
    load_key,
    parse_compact,
    verify_compact,
)
from tokenward.verify._errors import REASONS

from .corpus import CASES, ISSUER, LEEWAY, NOW, Case, Forger, b64json

FORGER = Forger()
KEYS = {FORGER.kid: load_key(FORGER.key.public_key(), kid=FORGER.kid)}


def verify(token: str, audience: str | None = None, now: float = NOW) -> Claims:
    return verify_compact(token, KEYS, issuer=ISSUER, audience=audience, leeway=LEEWAY, now=now)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_corpus(case: Case) -> None:
    """Each hand-built token is accepted or refused with the expected reason."""
    token = case.make(FORGER)
    if case.reason is None:
        claims = verify(token, case.audience)
        assert claims.sub
        return
    with pytest.raises(VerificationError) as refused:
        verify(token, case.audience)
    assert refused.value.reason == case.reason, str(refused.value)
    assert refused.value.reason in REASONS


def test_claims_are_typed() -> None:
    """sub, sid, jti, iss, iat, exp, aud, scope and roles come out typed; raw is read-only."""
    claims = verify(FORGER.sign(claims=FORGER.claims(scope="notes:read  notes:write", roles=["a"])))
    assert (claims.sub, claims.sid, claims.jti, claims.iss) == (
        "user-1",
        "session-1",
        "jti-1",
        ISSUER,
    )
    assert (claims.iat, claims.exp) == (NOW, NOW + 300)
    assert claims.scope == ("notes:read", "notes:write")
    assert claims.roles == ("a",)
    assert claims.aud == ()
    assert claims.has_scopes("notes:read") and not claims.has_scopes("notes:read", "admin")
    assert claims.raw["jti"] == "jti-1"
    with pytest.raises(TypeError):
        claims.raw["sub"] = "mallory"  # type: ignore[index]


def test_claims_pickle_deepcopy_and_asdict() -> None:
    """Issue 13: claims can be cached and queued (pickle, deepcopy, dataclasses.asdict gives
    plain JSON-able data), and every copy's raw is as read-only as the original's."""
    claims = verify(
        FORGER.sign(claims=FORGER.claims(scope="notes:read", roles=["a"], extra={"k": [1, 2]}))
    )
    pickled = pickle.loads(pickle.dumps(claims))  # noqa: S301 - our own bytes
    deep = copy.deepcopy(claims)
    for twin in (pickled, deep, copy.copy(claims)):
        assert twin == claims
        assert dict(twin.raw) == dict(claims.raw)
        assert twin.scope == ("notes:read",) and twin.roles == ("a",)
        with pytest.raises(TypeError):
            twin.raw["sub"] = "mallory"  # type: ignore[index]
        with pytest.raises(TypeError):
            twin.raw.update(sub="mallory")  # type: ignore[attr-defined]
    assert deep.raw["extra"] == {"k": [1, 2]} and deep.raw["extra"] is not claims.raw["extra"]

    data = dataclasses.asdict(claims)
    assert type(data["raw"]) is dict and data["raw"] == dict(claims.raw)
    assert data["sub"] == "user-1" and data["roles"] == ("a",)
    assert json.loads(json.dumps(data))["raw"]["extra"] == {"k": [1, 2]}
    data["raw"]["sub"] = "changed"  # a copy of one's own
    assert claims.raw["sub"] == "user-1"

    # Made by hand (tests, other token sources): raw is a read-only copy all the same.
    given_raw = {"sub": "user-1"}
    made = Claims("user-1", "s", "j", ISSUER, NOW, NOW + 60, raw=given_raw)
    given_raw["sub"] = "mallory"
    assert made.raw["sub"] == "user-1"
    assert pickle.loads(pickle.dumps(made)).raw == {"sub": "user-1"}  # noqa: S301
    with pytest.raises(TypeError):
        made.raw.pop("sub")  # type: ignore[attr-defined]


def test_expiry_raises_the_expired_subclass_at_exactly_the_leeway() -> None:
    """exp is accepted until now - leeway, then ExpiredTokenError (one base to catch)."""
    token = FORGER.sign(claims=FORGER.claims(exp=NOW + 300))
    assert verify(token, now=NOW + 300 + LEEWAY - 1).exp == NOW + 300
    with pytest.raises(ExpiredTokenError):
        verify(token, now=NOW + 300 + LEEWAY)


def test_the_message_never_carries_the_token_or_its_values() -> None:
    """str(error) names the reason (and a claim name), never a value from the token."""
    secret_sub = "sub-7f3a9c2e-do-not-log"
    token = FORGER.sign(claims=FORGER.claims(sub=secret_sub, iss="https://evil.example/x"))
    with pytest.raises(VerificationError) as refused:
        verify(token)
    message = str(refused.value) + repr(refused.value)
    for part in [secret_sub, "evil.example", *token.split(".")]:
        assert part not in message


def test_parsed_headers_are_shared_read_only() -> None:
    """The header cache hands out read-only mappings, so no caller can poison it."""
    parsed = parse_compact(FORGER.sign())
    with pytest.raises(TypeError):
        parsed.header["alg"] = "none"  # type: ignore[index]
    assert parse_compact(FORGER.sign()).header["alg"] == "ES256"


def test_unpadded_base64_only() -> None:
    """Padding characters are not base64url as JWS uses it (RFC 7515 2)."""
    header, payload, signature = FORGER.sign().split(".")
    padded = f"{header}.{payload}.{signature}=="
    with pytest.raises(VerificationError, match="malformed"):
        verify(padded)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_refused_with_a_verification_error(text: str) -> None:
    """Arbitrary text never raises anything but VerificationError."""
    with pytest.raises(VerificationError):
        verify(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=80))
def test_any_segments_are_refused_with_a_verification_error(
    header: bytes, payload: bytes, signature: bytes
) -> None:
    """Arbitrary bytes in each base64url segment only ever give VerificationError."""
    token = ".".join(
        base64.urlsafe_b64encode(part).rstrip(b"=").decode()
        for part in (header, payload, signature)
    )
    with pytest.raises(VerificationError):
        verify(token)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["iss", "sub", "iat", "exp", "jti", "sid", "nbf", "aud", "scope", "roles"]),
        json_values,
    )
)
def test_any_signed_claims_are_accepted_or_refused_cleanly(changes: dict[str, object]) -> None:
    """Validly signed but arbitrary claims: Claims or VerificationError, nothing else."""
    token = FORGER.sign(claims=FORGER.claims(**changes))
    try:
        claims = verify(token)
    except VerificationError:
        return
    assert isinstance(claims.sub, str) and isinstance(claims.exp, int)


def test_header_json_with_whitespace_is_accepted() -> None:
    """JSON is JSON: whitespace around members is not a reason to refuse."""
    token = FORGER.raw(
        f' {{ "alg" : "ES256", "typ": "at+jwt", "kid": "{FORGER.kid}" }} ',
        json.dumps(FORGER.claims()),
    )
    assert verify(token).sub == "user-1"


def test_a_header_segment_shared_by_many_tokens_is_not_decoded_each_time() -> None:
    """Same header segment, different payloads: both verify (the cache keys on the segment)."""
    first = FORGER.sign(claims=FORGER.claims(jti="a"))
    second = FORGER.sign(claims=FORGER.claims(jti="b"))
    assert first.split(".")[0] == second.split(".")[0]
    assert verify(first).jti == "a"
    assert verify(second).jti == "b"


def test_b64json_helper_matches_pyjwt_segments() -> None:
    """Sanity: the corpus's segments are what PyJWT would produce for the same JSON."""
    assert b64json({"a": 1}) == "eyJhIjoxfQ"
