"""`tokenward.testing`: a fake clock, a token factory and a fake tokenward for resource servers."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from tokenward.testing import FakeClock, TokenFactory
from tokenward.verify import (
    Claims,
    ExpiredTokenError,
    RevokedTokenError,
    VerificationError,
    Verifier,
    VerifierUnavailableError,
)
from tokenward.verify.fastapi import require_scopes


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def verifier(tokens: TokenFactory) -> Iterator[Verifier]:
    with tokens.verifier() as verifier:
        yield verifier


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and payload of a compact JWS, unverified."""

    def decode(part: str) -> dict[str, Any]:
        return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))

    header, payload, _ = token.split(".")
    return decode(header), decode(payload)


# -- the clock --------------------------------------------------------------------------------


def test_the_fake_clock_moves_only_by_hand() -> None:
    """time() and monotonic() (a verify.Clock) advance together; calling it gives now."""
    clock = FakeClock(1_800_000_000)
    assert clock.time() == clock() == clock.now == 1_800_000_000
    start = clock.monotonic()
    clock.advance(2.5)
    assert clock.time() == 1_800_000_002.5
    assert clock.monotonic() == start + 2.5
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


# -- tokens as tokenward issues them ----------------------------------------------------------


def test_a_token_is_shaped_like_tokenwards_own() -> None:
    """RFC 9068 header (typ at+jwt, the thumbprint kid) and tokenward's claims, nothing else."""
    tokens = TokenFactory(audience="notes-api", clock=FakeClock(1_800_000_000))
    header, payload = segments(tokens.issue("alice", sid="s-1"))
    assert header == {"alg": "ES256", "kid": tokens.kid, "typ": "at+jwt"}
    assert set(payload) == {"iss", "sub", "iat", "exp", "jti", "sid", "aud"}
    assert payload["iss"] == "https://tokenward.test"
    assert (payload["sub"], payload["sid"], payload["aud"]) == ("alice", "s-1", "notes-api")
    assert (payload["iat"], payload["exp"]) == (1_800_000_000, 1_800_000_900)
    assert tokens.jwks == {"keys": [tokens.public_jwk]}
    assert tokens.public_jwk["alg"] == "ES256" and tokens.public_jwk["use"] == "sig"


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_a_token_verifies_against_the_fake_jwks(algorithm: Any) -> None:
    """The Verifier fetches the factory's JWKS through the MockTransport and accepts its tokens."""
    tokens = TokenFactory(algorithm=algorithm, audience="notes-api")
    with tokens.verifier() as verifier:
        claims = verifier.verify(tokens.issue("alice", scope="notes:read", roles=["admin"]))
    assert (claims.sub, claims.aud) == ("alice", ("notes-api",))
    assert claims.has_scopes("notes:read") and claims.has_roles("admin")
    assert str(tokens.requests[0].url) == "https://tokenward.test/.well-known/jwks.json"


async def test_averify_uses_the_same_transport(tokens: TokenFactory, verifier: Verifier) -> None:
    """One MockTransport serves the sync and the async client."""
    assert (await verifier.averify(tokens.issue("bob"))).sub == "bob"
    await verifier.aclose()


def test_extra_claims_are_added_and_none_leaves_one_out(
    tokens: TokenFactory, verifier: Verifier
) -> None:
    claims = verifier.verify(tokens.issue(client_id="spa", nbf=int(tokens.clock.now)))
    assert claims.raw["client_id"] == "spa"
    with pytest.raises(VerificationError) as refused:
        verifier.verify(tokens.issue(sid=None, jti=None))
    assert (refused.value.reason, refused.value.detail) == ("missing_claim", "jti")


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "reason"),
    [
        (TokenFactory.expired, ExpiredTokenError, "expired"),
        (TokenFactory.wrong_issuer, VerificationError, "bad_issuer"),
        (TokenFactory.unknown_kid, VerificationError, "unknown_kid"),
        (TokenFactory.bad_signature, VerificationError, "bad_signature"),
        (TokenFactory.wrong_typ, VerificationError, "bad_typ"),
    ],
)
def test_bad_tokens_are_refused_for_their_reason(
    tokens: TokenFactory, verifier: Verifier, make: Any, error: type[VerificationError], reason: str
) -> None:
    verifier.verify(tokens.issue())  # the key set is fetched: refusals are the token's fault
    with pytest.raises(error) as refused:
        verifier.verify(make(tokens))
    assert type(refused.value) is error
    assert refused.value.reason == reason


def test_another_audience_is_refused() -> None:
    tokens = TokenFactory(audience="billing")
    with (
        tokens.verifier(audience="notes-api") as strict,
        pytest.raises(VerificationError, match="bad_audience"),
    ):
        strict.verify(tokens.issue())


def test_advancing_the_clock_past_exp_expires_a_token(
    tokens: TokenFactory, verifier: Verifier
) -> None:
    token = tokens.issue(ttl=60)
    verifier.verify(token)
    tokens.clock.advance(60 + 30)  # exp plus the 30 s leeway: still accepted at the edge
    with pytest.raises(ExpiredTokenError):
        verifier.verify(token)


# -- the revocation feed ----------------------------------------------------------------------


def test_a_revoked_session_is_refused_at_the_next_poll(
    tokens: TokenFactory, verifier: Verifier
) -> None:
    token = tokens.issue("alice", sid="s-1")
    other = tokens.issue("alice", sid="s-2")
    verifier.verify(token)
    tokens.revoke("s-1")
    verifier.verify(token)  # no poll due yet (revocation_bound / 2 = 2.5 s)
    tokens.clock.advance(3)
    with pytest.raises(RevokedTokenError):
        verifier.verify(token)
    assert verifier.verify(other).sid == "s-2"
    polls = [r for r in tokens.requests if r.url.path == "/auth/revocations"]
    assert [r.url.params.get("after") for r in polls] == [None, "0"]


def test_the_feed_honours_its_contract(tokens: TokenFactory) -> None:
    """Basic credentials required, a cursor it never gave is 400, the window without one."""
    client = httpx.Client(transport=tokens.transport())
    url, auth = tokens.revocation_url, (tokens.client_id, tokens.client_secret)
    tokens.revoke("old", at=tokens.clock.now - 3600)
    tokens.revoke("new")
    assert client.get(url).status_code == 401
    assert client.get(url, auth=(tokens.client_id, "wrong")).status_code == 401
    page = client.get(url, auth=auth).json()
    assert page == {
        "revoked": [{"sid": "new", "revoked_at": int(tokens.clock.now)}],
        "cursor": "2",
        "poll_interval": 2,
    }
    assert client.get(url, params={"after": "2"}, auth=auth).json()["revoked"] == []
    assert client.get(url, params={"after": "3"}, auth=auth).status_code == 400
    assert client.get("https://tokenward.test/elsewhere").status_code == 404
    client.close()


def test_tokenward_down_keeps_known_keys_and_can_reject(tokens: TokenFactory) -> None:
    """online=False answers 503: known keys keep working; on_stale="reject" refuses later."""
    with tokens.verifier(on_stale="reject") as verifier:
        verifier.verify(tokens.issue())
        tokens.online = False
        tokens.clock.advance(61)  # beyond max_staleness
        with pytest.raises(VerifierUnavailableError):
            verifier.verify(tokens.issue())
    down = TokenFactory()
    down.online = False
    with down.verifier() as cold, pytest.raises(VerifierUnavailableError, match="keys_unavail"):
        cold.verify(down.issue())


# -- a FastAPI service, tested as a user would ------------------------------------------------


# The service under test, as its own module would define it for production. (Module level:
# with `from __future__ import annotations` FastAPI resolves the annotations in the globals.)
notes_verifier = Verifier(issuer="https://auth.example.com", audience="notes-api")
notes_app = FastAPI()


@notes_app.get("/notes")
async def list_notes(
    user: Annotated[Claims, Depends(require_scopes(notes_verifier, "notes:read"))],
) -> dict[str, str]:
    return {"owner": user.sub}


@pytest.fixture
async def notes_client() -> AsyncIterator[tuple[TokenFactory, httpx.AsyncClient]]:
    """The example for docs/verify.md: every Depends(notes_verifier), direct or inside
    require_scopes, is answered by the factory's verifier."""
    tokens = TokenFactory(issuer="https://auth.example.com", audience="notes-api")
    notes_app.dependency_overrides[notes_verifier] = fake = tokens.verifier()
    transport = httpx.ASGITransport(app=notes_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes") as client:
        yield tokens, client
    notes_app.dependency_overrides.clear()
    await fake.aclose()


async def test_a_fastapi_service(notes_client: tuple[TokenFactory, httpx.AsyncClient]) -> None:
    tokens, client = notes_client

    async def get(token: str) -> httpx.Response:
        return await client.get("/notes", headers={"Authorization": f"Bearer {token}"})

    ok = await get(tokens.issue("alice", scope="notes:read"))
    assert ok.status_code == 200
    assert ok.json() == {"owner": "alice"}
    assert (await get(tokens.issue("alice"))).status_code == 403  # no notes:read
    expired = await get(tokens.expired(scope="notes:read"))
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert (await client.get("/notes")).status_code == 401
