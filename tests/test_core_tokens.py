"""The access-token encoder against PyJWT's own ``jwt.encode``: the same bytes, every algorithm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tokenward.core.keys import Keyring, SigningAlg, generate_private_pem, hs256_key, load_key
from tokenward.core.tokens import AccessTokenCodec

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256", "HS256"])
def test_issued_tokens_are_what_jwt_encode_makes_of_the_same_claims(alg: SigningAlg) -> None:
    if alg == "HS256":
        key = hs256_key(b"a server secret of thirty-two by")
    else:
        key = load_key(alg, generate_private_pem(alg), activates_at=NOW - timedelta(days=1))
    keyring = Keyring([key], alg=alg, token_lifetime=timedelta(minutes=15))
    codec = AccessTokenCodec(
        keyring, issuer="https://auth.example", audience="api", ttl=timedelta(minutes=15)
    )

    token = codec.issue(user_id="user-1", session_id="session-1", now=NOW.timestamp())

    claims = jwt.decode(
        token, key.verify_key, algorithms=[alg], audience="api", options={"verify_exp": False}
    )
    expected = jwt.encode(claims, key.private_key, alg, headers={"kid": key.kid, "typ": "at+jwt"})
    if alg == "ES256":  # ECDSA signatures are randomised: header and payload must match
        assert token.rsplit(".", 1)[0] == expected.rsplit(".", 1)[0]
    else:
        assert token == expected
    assert claims["sub"] == "user-1" and claims["sid"] == "session-1"
    assert codec.verify(token, now=NOW.timestamp()).sid == "session-1"


def test_a_replaced_key_under_the_same_kid_signs_with_the_new_key() -> None:
    """The encoded header is remembered per key object, not merely per kid."""
    first, second = hs256_key(b"first secret, thirty-two bytes!!"), hs256_key(b"x" * 32)
    second = type(second)(first.kid, "HS256", second.private_key, second.verify_key)
    codec = AccessTokenCodec(
        Keyring([first], alg="HS256", token_lifetime=timedelta(minutes=15)),
        issuer="https://auth.example",
        audience=None,
        ttl=timedelta(minutes=15),
    )
    codec.issue(user_id="u", session_id="s", now=NOW.timestamp())
    codec.keyring = Keyring([second], alg="HS256", token_lifetime=timedelta(minutes=15))
    token = codec.issue(user_id="u", session_id="s", now=NOW.timestamp())
    jwt.decode(token, second.verify_key, algorithms=["HS256"], options={"verify_exp": False})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, first.verify_key, algorithms=["HS256"], options={"verify_exp": False})


def test_the_testing_token_factory_issues_what_the_server_issues() -> None:
    """tokenward.testing promises tokens "as tokenward issues them": the same JOSE header
    members and the same claims, checked against the server's own codec."""
    from tokenward.testing import FakeClock, TokenFactory

    clock = FakeClock(NOW.timestamp())
    factory = TokenFactory("https://auth.example", audience="api", ttl=900, clock=clock)
    key = load_key("ES256", generate_private_pem("ES256"), activates_at=NOW - timedelta(days=1))
    codec = AccessTokenCodec(
        Keyring([key], alg="ES256", token_lifetime=timedelta(minutes=15)),
        issuer="https://auth.example",
        audience="api",
        ttl=timedelta(seconds=900),
    )
    ours = codec.issue(user_id="user-1", session_id="session-1", now=NOW.timestamp())
    theirs = factory.issue("user-1", sid="session-1")

    assert jwt.get_unverified_header(theirs).keys() == jwt.get_unverified_header(ours).keys()
    assert jwt.get_unverified_header(theirs)["typ"] == jwt.get_unverified_header(ours)["typ"]
    unverified = {"verify_signature": False}
    our_claims = jwt.decode(ours, options=unverified)
    their_claims = jwt.decode(theirs, options=unverified)
    assert their_claims.keys() == our_claims.keys()
    for name in ("iss", "sub", "aud", "iat", "exp", "sid"):
        assert their_claims[name] == our_claims[name], name
