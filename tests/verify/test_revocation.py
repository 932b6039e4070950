"""The revocation feed, client side, against the contract (the feed faked with MockTransport,
keys from a real tokenward), and against a real server once it serves /auth/revocations.

Contract: GET {issuer}/auth/revocations[?after=<cursor>] with HTTP Basic client credentials
answers 200 {"revoked": [{"sid", "revoked_at"}], "cursor", "poll_interval"}, 401 for a bad
client; without `after`, every session ended within the last access-token lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from typing import Any

import httpx
import pytest

from tokenward.verify import (
    RevokedTokenError,
    VerificationError,
    Verifier,
    VerifierUnavailableError,
)

from .support import FakeClock, Login, Tokenward

CLIENT_ID, CLIENT_SECRET = "rs-notes", "s3cret-feed-credential"
BOUND = 5.0


class FakeFeed:
    """The feed as the contract describes it; everything else goes to the real tokenward."""

    def __init__(self, tokenward: Tokenward) -> None:
        self.tokenward = tokenward
        self.entries: list[tuple[int, str, int]] = []  # (sequence, sid, revoked_at)
        self.polls: list[httpx.Request] = []
        self.failure: str | None = None
        self.page_override: Any = None
        self.poll_interval = 2
        self.transport = httpx.MockTransport(self.handle)

    @property
    def url(self) -> str:
        return f"{self.tokenward.base}/auth/revocations"

    def revoke(self, sid: str, at: float | None = None) -> None:
        self.entries.append((len(self.entries) + 1, sid, int(time.time() if at is None else at)))

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/auth/revocations":
            real = httpx.get(str(request.url))  # the JWKS, from the real server
            return httpx.Response(real.status_code, content=real.content, headers=real.headers)
        self.polls.append(request)
        if self.failure == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if self.failure == "500":
            return httpx.Response(500)
        if self.failure == "slow":
            raise httpx.ReadTimeout("timed out", request=request)
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return httpx.Response(401, json={"title": "unknown client"})
        if self.page_override is not None:
            return httpx.Response(200, json=self.page_override)
        if not request.url.params.get("after", "0").isdigit():
            return httpx.Response(400, json={"error": "invalid_request"})
        after = int(request.url.params.get("after", "0"))
        newer = [(seq, sid, at) for seq, sid, at in self.entries if seq > after]
        return httpx.Response(
            200,
            json={
                "revoked": [{"sid": sid, "revoked_at": at} for _, sid, at in newer],
                "cursor": str(len(self.entries)),
                "poll_interval": self.poll_interval,
            },
        )


@pytest.fixture
def feed(tokenward: Tokenward) -> FakeFeed:
    return FakeFeed(tokenward)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def feed_verifier(feed: FakeFeed, clock: FakeClock, **options: Any) -> Verifier:
    settings: dict[str, Any] = {
        "revocation_url": feed.url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "revocation_bound": BOUND,
        "transport": feed.transport,
        "clock": clock,
        **options,
    }
    return Verifier(feed.tokenward.issuer, **settings)


@pytest.fixture(scope="module")
def bob(tokenward: Tokenward) -> Login:
    return tokenward.login()


def test_a_revoked_session_is_refused_after_the_next_poll(
    feed: FakeFeed, clock: FakeClock, alice: Login, bob: Login
) -> None:
    """Within half the bound nothing is asked; the next request after it polls and refuses."""
    with feed_verifier(feed, clock) as verifier:
        assert verifier.verify(bob.access_token).sid == bob.claims["sid"]
        assert len(feed.polls) == 1
        feed.revoke(bob.claims["sid"])
        clock.advance(BOUND / 2)
        verifier.verify(bob.access_token)  # not due yet: what is known still says alive
        assert len(feed.polls) == 1
        clock.advance(0.1)
        with pytest.raises(RevokedTokenError) as refused:
            verifier.verify(bob.access_token)
        assert refused.value.reason == "revoked"
        assert isinstance(refused.value, VerificationError)
        assert len(feed.polls) == 2
        assert verifier.verify(alice.access_token).sid == alice.claims["sid"]


def test_no_call_per_request(feed: FakeFeed, clock: FakeClock, alice: Login) -> None:
    """A thousand verifications within one interval make one poll."""
    with feed_verifier(feed, clock) as verifier:
        for _ in range(1000):
            verifier.verify(alice.access_token)
            clock.advance(0.002)
        assert len(feed.polls) == 1


def test_credentials_and_cursor_go_with_each_poll(
    feed: FakeFeed, clock: FakeClock, alice: Login
) -> None:
    """Basic auth on every poll; the first without `after`, then after=<the last cursor>."""
    feed.revoke("someone-else")
    with feed_verifier(feed, clock) as verifier:
        verifier.verify(alice.access_token)
        clock.advance(3)
        feed.revoke("another-one")
        verifier.verify(alice.access_token)
        clock.advance(3)
        verifier.verify(alice.access_token)
        assert verifier.revocations is not None
        assert set(verifier.revocations.revoked) == {"someone-else", "another-one"}
    assert [poll.url.params.get("after") for poll in feed.polls] == [None, "1", "2"]
    assert all(poll.headers["authorization"].startswith("Basic ") for poll in feed.polls)


def test_the_bound_holds_for_every_request(feed: FakeFeed, clock: FakeClock, bob: Login) -> None:
    """Requests every 0.3 s: none passes later than the bound after the feed lists the sid."""
    with feed_verifier(feed, clock) as verifier:
        revoked_at = None
        for step in range(100):
            if step == 37:
                feed.revoke(bob.claims["sid"])
                revoked_at = clock.mono
            try:
                verifier.verify(bob.access_token)
            except RevokedTokenError:
                assert revoked_at is not None
                assert clock.mono - revoked_at <= BOUND
                break
            clock.advance(0.3)
        else:
            pytest.fail("never refused")
        assert clock.mono - revoked_at <= BOUND / 2 + 0.3


@pytest.mark.parametrize("failure", ["connect", "500", "slow"])
def test_an_unreachable_feed_keeps_what_is_known_and_retries_per_interval(
    feed: FakeFeed,
    clock: FakeClock,
    alice: Login,
    bob: Login,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Known revocations stay enforced; one retry per interval, not one per request."""
    caplog.set_level(logging.DEBUG, logger="tokenward.verify")
    feed.revoke(bob.claims["sid"])
    with feed_verifier(feed, clock) as verifier:
        verifier.verify(alice.access_token)
        feed.failure = failure
        clock.advance(3)
        for _ in range(100):
            verifier.verify(alice.access_token)
            with pytest.raises(RevokedTokenError):
                verifier.verify(bob.access_token)
        assert len(feed.polls) == 2
        clock.advance(3)
        verifier.verify(alice.access_token)
        assert len(feed.polls) == 3
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "poll failed" in warnings[0].getMessage()
        feed.failure = None
        clock.advance(3)
        verifier.verify(alice.access_token)
        assert "answers again" in caplog.text


def test_stale_with_accept_verifies_and_warns_once(
    feed: FakeFeed, clock: FakeClock, alice: Login, caplog: pytest.LogCaptureFixture
) -> None:
    """on_stale="accept" (default): past max_staleness, signed tokens pass; one warning."""
    with feed_verifier(feed, clock, max_staleness=30) as verifier:
        verifier.verify(alice.access_token)
        feed.failure = "connect"
        caplog.set_level(logging.WARNING, logger="tokenward.verify")
        for _ in range(20):
            clock.advance(3)
            assert verifier.verify(alice.access_token).sub == alice.claims["sub"]
        stale = [r for r in caplog.records if "accepting signed tokens" in r.getMessage()]
        assert len(stale) == 1
        assert not verifier.ready


def test_stale_with_reject_refuses_every_token_until_the_feed_answers(
    feed: FakeFeed, clock: FakeClock, alice: Login
) -> None:
    """on_stale="reject": past max_staleness every token is refused as unavailable (503)."""
    with feed_verifier(feed, clock, max_staleness=30, on_stale="reject") as verifier:
        verifier.verify(alice.access_token)
        feed.failure = "500"
        clock.advance(29)
        verifier.verify(alice.access_token)
        clock.advance(2)
        with pytest.raises(VerifierUnavailableError) as refused:
            verifier.verify(alice.access_token)
        assert refused.value.reason == "revocations_unavailable"
        feed.failure = None
        clock.advance(3)
        assert verifier.verify(alice.access_token).sub == alice.claims["sub"]


def test_reject_before_the_first_poll_succeeds(
    feed: FakeFeed, clock: FakeClock, alice: Login
) -> None:
    """A verifier that never heard from the feed knows nothing: "reject" refuses."""
    feed.failure = "connect"
    verifier = feed_verifier(feed, clock, on_stale="reject")
    with verifier, pytest.raises(VerifierUnavailableError):
        verifier.verify(alice.access_token)


def test_a_refused_client_is_a_failure_not_an_empty_feed(
    feed: FakeFeed, clock: FakeClock, alice: Login, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 (wrong client secret) is logged as such and leaves the verifier stale."""
    caplog.set_level(logging.WARNING, logger="tokenward.verify")
    verifier = feed_verifier(feed, clock, client_secret="wrong", on_stale="reject")
    with verifier, pytest.raises(VerifierUnavailableError):
        verifier.verify(alice.access_token)
    assert "401" in caplog.text
    assert "wrong" not in caplog.text


@pytest.mark.parametrize(
    "page",
    [
        {"revoked": [{"sid": "a", "revoked_at": 1}, {"sid": "", "revoked_at": 1}], "cursor": "9"},
        {"revoked": [{"sid": "a", "revoked_at": "yesterday"}], "cursor": "9"},
        {"revoked": [{"sid": "a", "revoked_at": True}], "cursor": "9"},
        {"revoked": [["a", 1]], "cursor": "9"},
        {"revoked": [{"sid": "a", "revoked_at": 1}]},
        {"revoked": [], "cursor": 9},
        {"revoked": [], "cursor": "9", "poll_interval": "2"},
        {"sessions": []},
        [],
    ],
)
def test_an_off_contract_page_is_refused_whole(
    feed: FakeFeed, clock: FakeClock, alice: Login, page: Any
) -> None:
    """One bad entry spoils the page: nothing of it is applied and the cursor stays."""
    with feed_verifier(feed, clock) as verifier:
        verifier.verify(alice.access_token)
        feed.page_override = page
        clock.advance(3)
        verifier.verify(alice.access_token)
        assert verifier.revocations is not None
        assert verifier.revocations.cursor == "0"
        assert verifier.revocations.failures == 1


def test_a_refused_cursor_starts_over_instead_of_failing_forever(
    feed: FakeFeed, clock: FakeClock, alice: Login, bob: Login
) -> None:
    """tokenward answers 400 for a cursor it cannot read (as the real server does): the next
    poll asks without one, gets the whole window again, and nothing is missed."""
    with feed_verifier(feed, clock) as verifier:
        verifier.verify(alice.access_token)
        assert verifier.revocations is not None
        verifier.revocations.cursor = "from-an-older-tokenward"
        feed.revoke(bob.claims["sid"])
        clock.advance(3)
        verifier.verify(alice.access_token)  # 400: counted as a failed poll
        assert verifier.revocations.cursor is None
        clock.advance(3)
        with pytest.raises(RevokedTokenError):
            verifier.verify(bob.access_token)
    assert [poll.url.params.get("after") for poll in feed.polls] == [
        None,
        "from-an-older-tokenward",
        None,
    ]


def test_sessions_are_forgotten_once_their_tokens_are_dead(
    feed: FakeFeed, clock: FakeClock, alice: Login
) -> None:
    """A sid is kept max_token_lifetime + 2 x leeway after its revocation, then dropped."""
    now = clock.wall
    feed.revoke("long-gone", at=now - 600 - 61)
    feed.revoke("recent", at=now - 10)
    recent_at = feed.entries[-1][2]
    with feed_verifier(feed, clock, max_token_lifetime=600) as verifier:
        assert verifier.revocations is not None
        with pytest.raises(VerificationError, match="lifetime_too_long"):
            verifier.verify(alice.access_token)  # a 900 s token outlives a 600 s memory
        assert set(verifier.revocations.revoked) == {"recent"}
        clock.advance(recent_at + 600 + 60 - 0.5 - clock.wall)
        verifier.warm_up()
        assert set(verifier.revocations.revoked) == {"recent"}
        clock.advance(1)
        verifier.warm_up()
        assert verifier.revocations.revoked == {}


def test_a_slow_poll_hint_is_reported_once(
    feed: FakeFeed, clock: FakeClock, alice: Login, caplog: pytest.LogCaptureFixture
) -> None:
    """The feed suggesting a longer interval than the bound allows is logged, and ignored."""
    feed.poll_interval = 30
    caplog.set_level(logging.WARNING, logger="tokenward.verify")
    with feed_verifier(feed, clock) as verifier:
        for _ in range(3):
            verifier.verify(alice.access_token)
            clock.advance(3)
    assert len(feed.polls) == 3
    assert caplog.text.count("suggests polling every 30s") == 1


async def test_concurrent_async_requests_share_one_poll(
    feed: FakeFeed, clock: FakeClock, alice: Login, bob: Login
) -> None:
    """Twenty concurrent averify calls when a poll is due: one poll, all see its result."""
    async with feed_verifier(feed, clock) as verifier:
        await verifier.averify(alice.access_token)
        feed.revoke(bob.claims["sid"])
        clock.advance(3)
        tokens = [bob.access_token] * 10 + [alice.access_token] * 10
        results = await asyncio.gather(
            *(verifier.averify(token) for token in tokens), return_exceptions=True
        )
    assert len(feed.polls) == 2
    assert sum(isinstance(r, RevokedTokenError) for r in results) >= 9
    assert all(not isinstance(r, Exception) for r in results[10:])


# -- against a real tokenward ---------------------------------------------------------------------


def _client_credentials(tokenward: Tokenward) -> tuple[str, str]:
    """`tokenward clients create NAME`, after checking the feed is there: its absence is a
    regression these tests must report, never a skip."""
    probe = httpx.get(f"{tokenward.base}/auth/revocations")
    assert probe.status_code == 401, f"/auth/revocations without credentials: {probe.status_code}"
    created = tokenward.cli("clients", "create", "notes-api")
    assert created.returncode == 0, created.stderr
    values = dict(re.findall(r"^(client_id|client_secret)=(\S+)$", created.stdout, re.MULTILINE))
    return values["client_id"], values["client_secret"]


async def test_logout_reaches_a_real_resource_server_within_the_bound(
    tokenward: Tokenward, alice: Login
) -> None:
    """Real feed: after logout the token is refused within the bound, others pass.

    tokenward lists an ended session once it is a second old (its cursor lags the clock so no
    committing transaction is skipped): the bound counts from then.
    """
    client_id, client_secret = _client_credentials(tokenward)
    carol = tokenward.login()
    bound, feed_lag = 2.0, 1.0
    async with Verifier(
        tokenward.issuer,
        revocation_url=f"{tokenward.base}/auth/revocations",
        client_id=client_id,
        client_secret=client_secret,
        revocation_bound=bound,
        max_staleness=bound,
        on_stale="reject",
    ) as verifier:
        await verifier.averify(carol.access_token)
        tokenward.logout(carol)
        ended = time.monotonic()
        while True:
            try:
                await verifier.averify(carol.access_token)
            except RevokedTokenError:
                break
            assert time.monotonic() - ended <= feed_lag + bound, "accepted after the bound"
            await asyncio.sleep(0.05)
        assert (await verifier.averify(alice.access_token)).sub == alice.claims["sub"]
        wrong = Verifier(
            tokenward.issuer,
            revocation_url=f"{tokenward.base}/auth/revocations",
            client_id=client_id,
            client_secret="not-the-secret",
            on_stale="reject",
        )
        with pytest.raises(VerifierUnavailableError):
            wrong.verify(alice.access_token)
        wrong.close()


def test_a_real_feed_with_the_sync_verifier(tokenward: Tokenward) -> None:
    """The synchronous path against the real feed: first poll without cursor, then with one."""
    client_id, client_secret = _client_credentials(tokenward)
    dave = tokenward.login()
    tokenward.logout(dave)
    time.sleep(1.1)  # past the feed's settle time
    with Verifier(
        tokenward.issuer,
        revocation_url=f"{tokenward.base}/auth/revocations",
        client_id=client_id,
        client_secret=client_secret,
        on_stale="reject",
    ) as verifier:
        with pytest.raises(RevokedTokenError):
            verifier.verify(dave.access_token)  # known from the first page (no cursor)
        assert verifier.revocations is not None
        assert verifier.revocations.cursor
        assert verifier.ready


def test_the_real_feed_refuses_a_foreign_cursor_and_the_client_starts_over(
    tokenward: Tokenward, alice: Login
) -> None:
    """The real server's 400 for an unreadable cursor: the next poll goes without one."""
    client_id, client_secret = _client_credentials(tokenward)
    with Verifier(
        tokenward.issuer,
        revocation_url=f"{tokenward.base}/auth/revocations",
        client_id=client_id,
        client_secret=client_secret,
        revocation_bound=0.4,
    ) as verifier:
        verifier.verify(alice.access_token)
        assert verifier.revocations is not None
        verifier.revocations.cursor = "not-a-tokenward-cursor"
        for _ in range(2):
            time.sleep(0.25)
            verifier.verify(alice.access_token)
        assert verifier.revocations.failures == 0
        assert verifier.revocations.cursor not in (None, "not-a-tokenward-cursor")
