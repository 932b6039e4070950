"""The key-set cache: max-age honoured and clamped, one refetch per unknown kid with a floor,
old keys kept through failures, one fetch for many concurrent callers."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import httpx
import pytest

from tokenward.verify import VerificationError, Verifier, VerifierUnavailableError
from tokenward.verify._jwks import max_age_of

from .corpus import ISSUER, NOW, Forger
from .support import FakeClock

JWKS_URL = "https://auth.example/.well-known/jwks.json"


class FakeJwks:
    """A JWKS endpoint behind httpx.MockTransport: holds keys, counts fetches, can fail."""

    def __init__(self, *forgers: Forger, cache_control: str | None = "public, max-age=300"):
        self.forgers = list(forgers)
        self.cache_control = cache_control
        self.fetches = 0
        self.status = 200
        self.body: Any = None
        self.delay = 0.0
        self.transport = httpx.MockTransport(self.handle)

    def document(self) -> dict[str, Any]:
        return {
            "keys": [{**f.jwk, "kid": f.kid, "alg": "ES256", "use": "sig"} for f in self.forgers]
        }

    def _response(self) -> httpx.Response:
        self.fetches += 1
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        body = self.document() if self.body is None else self.body
        return httpx.Response(self.status, json=body, headers=headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        if self.delay:
            threading.Event().wait(self.delay)
        return self._response()


def verifier(jwks: FakeJwks, clock: FakeClock, **options: Any) -> Verifier:
    return Verifier(ISSUER, jwks_url=JWKS_URL, transport=jwks.transport, clock=clock, **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=NOW)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 300),
        ("public, max-age=120", 120),
        ('max-age="90", public', 90),
        ("MAX-AGE=60", 60),
        ("public, max-age=1", 30),
        ("max-age=0", 30),
        ("max-age=31536000", 3600),
        ("max-age=-5", 30),
        ("max-age=soon", 300),
        ("no-store", 30),
        ("no-cache, max-age=600", 30),
        ("private", 300),
    ],
)
def test_max_age_is_read_and_clamped(header: str | None, seconds: float) -> None:
    """max-age is honoured within 30 s..1 h; absent or unreadable means the 300 s default."""
    assert max_age_of(header, default=300, limits=(30, 3600)) == seconds


def test_the_set_is_fetched_once_and_kept_for_its_max_age(clock: FakeClock) -> None:
    """Many verifications, one fetch; past max-age the next verification refetches."""
    forger = Forger()
    jwks = FakeJwks(forger, cache_control="public, max-age=120")
    with verifier(jwks, clock) as v:
        for _ in range(50):
            assert v.verify(forger.sign()).sub == "user-1"
        assert jwks.fetches == 1
        clock.advance(119)
        v.verify(forger.sign())
        assert jwks.fetches == 1
        clock.advance(2)
        v.verify(forger.sign())
        assert jwks.fetches == 2


def test_an_unknown_kid_refetches_once_then_the_floor_holds(clock: FakeClock) -> None:
    """Made-up kids cause one refetch, then none until the floor (10 s) has passed."""
    forger = Forger()
    jwks = FakeJwks(forger)
    with verifier(jwks, clock) as v:
        v.verify(forger.sign())
        clock.advance(11)
        for _ in range(100):
            with pytest.raises(VerificationError, match="unknown_kid"):
                v.verify(forger.sign(header=forger.header(kid=uuid.uuid4().hex)))
        assert jwks.fetches == 2
        clock.advance(10)
        with pytest.raises(VerificationError, match="unknown_kid"):
            v.verify(forger.sign(header=forger.header(kid="yet-another")))
        assert jwks.fetches == 3


def test_a_new_key_is_picked_up_on_its_first_token(clock: FakeClock) -> None:
    """Rotation: a token from a newly published key verifies without waiting for max-age."""
    old, new = Forger(), Forger()
    jwks = FakeJwks(old)
    with verifier(jwks, clock) as v:
        v.verify(old.sign())
        jwks.forgers.append(new)
        clock.advance(10)
        assert v.verify(new.sign()).sub == "user-1"
        assert v.verify(old.sign()).sub == "user-1"
        assert jwks.fetches == 2


def test_a_key_dropped_from_the_set_stops_verifying_after_max_age(clock: FakeClock) -> None:
    """A retired key's tokens are refused once the cached set has been refreshed."""
    old, new = Forger(), Forger()
    jwks = FakeJwks(old, new)
    with verifier(jwks, clock) as v:
        v.verify(old.sign())
        jwks.forgers.remove(old)
        clock.advance(301)
        with pytest.raises(VerificationError, match="unknown_kid"):
            v.verify(old.sign())
        assert v.verify(new.sign()).sub == "user-1"


@pytest.mark.parametrize("failure", ["status-500", "not-json", "not-a-jwks", "connect-error"])
def test_a_failed_refresh_keeps_the_keys_and_retries_after_the_floor(
    clock: FakeClock, failure: str
) -> None:
    """tokenward down: cached keys keep verifying; one retry per floor, not per request."""
    forger = Forger()
    jwks = FakeJwks(forger)
    with verifier(jwks, clock) as v:
        v.verify(forger.sign())
        clock.advance(301)
        if failure == "status-500":
            jwks.status = 500
        elif failure == "not-a-jwks":
            jwks.body = {"keys": "none"}
        elif failure == "not-json":
            jwks.transport.handler = lambda request: httpx.Response(200, text="<html>")
        else:
            jwks.transport.handler = _refuse_connection
        for _ in range(20):
            assert v.verify(forger.sign()).sub == "user-1"
        clock.advance(10)
        assert v.verify(forger.sign()).sub == "user-1"
        jwks.transport.handler = jwks.handle
        jwks.status, jwks.body = 200, None
        fetches = jwks.fetches
        clock.advance(10)
        v.verify(forger.sign())
        assert jwks.fetches == fetches + 1  # back: refreshed once


def _refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_no_keys_at_all_is_unavailable_not_invalid(clock: FakeClock) -> None:
    """Never fetched: VerifierUnavailableError (503 in the glue), not a 401."""
    jwks = FakeJwks(Forger())
    jwks.status = 503
    with verifier(jwks, clock) as v:
        with pytest.raises(VerifierUnavailableError, match="keys_unavailable"):
            v.verify(Forger().sign())
        assert not v.ready
        assert not v.warm_up()
        jwks.status = 200
        clock.advance(10)
        assert v.warm_up()


async def test_async_verification_shares_the_cache_and_fetches_once(clock: FakeClock) -> None:
    """Twenty concurrent averify calls on a cold cache make one fetch between them."""
    forger = Forger()
    jwks = FakeJwks(forger)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return jwks.handle(request)

    jwks.transport.handler = slow
    async with verifier(jwks, clock) as v:
        results = await asyncio.gather(*(v.averify(forger.sign()) for _ in range(20)))
        assert {claims.sub for claims in results} == {"user-1"}
        assert jwks.fetches == 1


def test_threads_on_a_cold_cache_make_one_fetch(clock: FakeClock) -> None:
    """Ten threads verifying at once on a cold cache: one fetch, all verified."""
    forger = Forger()
    jwks = FakeJwks(forger)
    jwks.delay = 0.05
    results: list[str] = []
    with verifier(jwks, clock) as v:
        threads = [
            threading.Thread(target=lambda: results.append(v.verify(forger.sign()).sub))
            for _ in range(10)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == ["user-1"] * 10
    assert jwks.fetches == 1


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://auth.example/jwks", True),
        ("http://127.0.0.1:8000/jwks", True),
        ("http://localhost:8000/jwks", True),
        ("http://[::1]:8000/jwks", True),
        ("http://auth.example/jwks", False),
        ("http://10.0.0.1/jwks", False),
        ("ftp://auth.example/jwks", False),
        ("auth.example/jwks", False),
    ],
)
def test_keys_travel_over_https_except_on_loopback(url: str, ok: bool) -> None:
    """A JWKS fetched over plain HTTP could be forged on the way: refused unless loopback."""
    if ok:
        Verifier(ISSUER, jwks_url=url)
    else:
        with pytest.raises(ValueError, match="jwks_url"):
            Verifier(ISSUER, jwks_url=url)


def test_insecure_http_is_an_explicit_choice() -> None:
    """insecure_http=True allows plain HTTP to another host (a private network, say)."""
    assert Verifier(ISSUER, jwks_url="http://tokenward:8000/jwks", insecure_http=True)


def test_the_jwks_url_defaults_to_the_issuers_well_known() -> None:
    """No jwks_url and no key: {issuer}/.well-known/jwks.json."""
    assert "https://auth.example/.well-known/jwks.json" in repr(Verifier("https://auth.example/"))


@pytest.mark.parametrize(
    "options",
    [
        {"key": b"s" * 32, "algorithm": "HS256", "jwks_url": JWKS_URL},
        {"algorithm": "ES256"},
        {"kid": "k"},
        {"revocation_url": "https://auth.example/auth/revocations"},
        {"revocation_url": "https://a/r", "client_id": "c", "client_secret": "s", "on_stale": "x"},
        {
            "revocation_url": "https://a/r",
            "client_id": "c",
            "client_secret": "s",
            "max_staleness": 1,
        },
    ],
    ids=[
        "key-and-jwks",
        "alg-without-key",
        "kid-without-key",
        "feed-without-client",
        "on-stale",
        "staleness",
    ],
)
def test_contradictory_options_are_refused(options: dict[str, Any]) -> None:
    """Options that cannot work together fail at construction, not at the first request."""
    with pytest.raises(ValueError):
        Verifier(ISSUER, **options)
