"""The Verifier against a real `tokenward serve`: its tokens verify from the published JWKS."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tokenward.verify import (
    Claims,
    ExpiredTokenError,
    VerificationError,
    Verifier,
    VerifierUnavailableError,
)

from .support import HS256_SECRET, FakeClock, Login, Tokenward, free_port

Make = Callable[..., Verifier]


class CountingTransport(httpx.HTTPTransport):
    """The real network, with a count of the requests made."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        return super().handle_request(request)


def tamper_claim(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def flip_signature_byte(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[5] ^= 0x01
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def assert_same_user(claims: Claims, login: Login) -> None:
    assert claims.sub == login.claims["sub"]
    assert claims.sid == login.claims["sid"]
    assert claims.jti == login.claims["jti"]
    assert (claims.iat, claims.exp) == (login.claims["iat"], login.claims["exp"])


def test_a_real_token_verifies_from_the_published_jwks(tokenward: Tokenward, alice: Login) -> None:
    """The login token verifies with only the issuer URL; the key set is fetched once."""
    transport = CountingTransport()
    with Verifier(tokenward.issuer, transport=transport) as verifier:
        for _ in range(20):
            claims = verifier.verify(alice.access_token)
        assert_same_user(claims, alice)
        assert claims.iss == tokenward.issuer
        assert claims.aud == () and claims.scope == () and claims.roles == ()
    assert transport.requests == ["/.well-known/jwks.json"]


async def test_averify_gives_the_same_claims(tokenward: Tokenward, alice: Login) -> None:
    """The async path fetches with httpx.AsyncClient and returns equal claims."""
    async with Verifier(tokenward.issuer) as verifier:
        assert verifier.ready is False
        assert await verifier.awarm_up()
        claims = await verifier.averify(alice.access_token)
        assert claims == verifier.verify(alice.access_token)
    assert_same_user(claims, alice)


def test_after_logout_the_token_still_verifies_by_signature(
    tokenward: Tokenward, make_verifier: Make
) -> None:
    """Logout ends the session at tokenward (/auth/me: 401) but the signature stays valid:
    telling resource servers is the revocation feed's job."""
    bob = tokenward.login()
    verifier = make_verifier(tokenward.issuer)
    assert verifier.verify(bob.access_token).sid == bob.claims["sid"]
    tokenward.logout(bob)
    assert tokenward.me_status(bob.access_token) == 401
    assert verifier.verify(bob.access_token).sid == bob.claims["sid"]


@pytest.mark.parametrize("tamper", ["claim", "signature", "other-issuer"])
def test_tampered_real_tokens_are_refused(
    tokenward: Tokenward, alice: Login, tamper: str, make_verifier: Make
) -> None:
    """A changed claim or a flipped signature byte fails; so does another issuer's verifier."""
    verifier = make_verifier(tokenward.issuer)
    if tamper == "claim":
        token, reason = tamper_claim(alice.access_token, sub="mallory"), "bad_signature"
    elif tamper == "signature":
        token, reason = flip_signature_byte(alice.access_token), "bad_signature"
    else:
        verifier = make_verifier("http://127.0.0.1:1", jwks_url=tokenward.jwks_url)
        token, reason = alice.access_token, "bad_issuer"
    with pytest.raises(VerificationError) as refused:
        verifier.verify(token)
    assert refused.value.reason == reason
    assert alice.access_token not in str(refused.value)
    assert alice.claims["sub"] not in str(refused.value)


def test_a_real_token_expires_with_the_clock(
    tokenward: Tokenward, alice: Login, make_verifier: Make
) -> None:
    """With the clock moved past exp + leeway, the token is refused as expired."""
    clock = FakeClock()
    verifier = make_verifier(tokenward.issuer, clock=clock)
    verifier.verify(alice.access_token)
    clock.wall = alice.claims["exp"] + 30
    with pytest.raises(ExpiredTokenError):
        verifier.verify(alice.access_token)


def test_the_static_jwk_of_the_server_verifies_its_tokens(
    tokenward: Tokenward, alice: Login
) -> None:
    """A JWK copied from the JWKS works as a static key= (no fetching at all)."""
    jwk = tokenward.jwks()["keys"][0]
    transport = CountingTransport()
    verifier = Verifier(tokenward.issuer, key=jwk, transport=transport)
    assert_same_user(verifier.verify(alice.access_token), alice)
    assert transport.requests == []


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_each_published_algorithm_verifies(servers: Any, alg: str, make_verifier: Make) -> None:
    """EdDSA and RS256 servers: their tokens verify, pinned to their own algorithm."""
    server = servers.get(alg)
    login = server.login()
    claims = make_verifier(server.issuer).verify(login.access_token)
    assert_same_user(claims, login)


def test_an_hs256_server_with_the_shared_secret(servers: Any, make_verifier: Make) -> None:
    """HS256 publishes no key; key=secret, algorithm="HS256" (the tutorial's shape) verifies."""
    server = servers.get("HS256")
    assert server.jwks()["keys"] == []
    login = server.login()
    verifier = Verifier(server.issuer, key=HS256_SECRET.encode(), algorithm="HS256")
    assert_same_user(verifier.verify(login.access_token), login)
    wrong = Verifier(server.issuer, key=b"another-secret-of-at-least-32-bytes!!", algorithm="HS256")
    with pytest.raises(VerificationError, match="bad_signature"):
        wrong.verify(login.access_token)
    jwks_verifier = make_verifier(server.issuer)
    with pytest.raises(VerificationError, match="unknown_kid"):
        jwks_verifier.verify(login.access_token)


def test_a_server_with_an_audience(servers: Any, make_verifier: Make) -> None:
    """With TOKENWARD_AUDIENCE, the verifier must expect that audience, and no other."""
    server = servers.get("ES256", TOKENWARD_AUDIENCE="api://notes")
    login = server.login()
    claims = make_verifier(server.issuer, audience="api://notes").verify(login.access_token)
    assert claims.aud == ("api://notes",)
    with pytest.raises(VerificationError, match="bad_audience"):
        make_verifier(server.issuer, audience="api://billing").verify(login.access_token)
    with pytest.raises(VerificationError, match="bad_audience"):
        make_verifier(server.issuer).verify(login.access_token)


def test_tokenward_unreachable_before_any_fetch(
    caplog: pytest.LogCaptureFixture, make_verifier: Make
) -> None:
    """Nothing listening: 503-kind error, one warning, and no exception text with secrets."""
    base = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="tokenward.verify")
    verifier = make_verifier(base, http_timeout=1)
    with pytest.raises(VerifierUnavailableError):
        verifier.verify("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.e30.c2ln")
    assert "JWKS fetch failed" in caplog.text
