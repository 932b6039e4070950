"""The two things a verifier fetches from tokenward: the key set and the revocation feed.

Each has a sync and an async path over the same state; the HTTP client is handed in, so this
module decides what to fetch and when, and the :class:`Verifier` owns the connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx

from tokenward.verify._claims import Claims
from tokenward.verify._clock import Clock
from tokenward.verify._errors import (
    RevokedTokenError,
    VerificationError,
    VerifierUnavailableError,
)
from tokenward.verify._jwks import JwksCache
from tokenward.verify._keys import VerifyKey
from tokenward.verify._revocation import RevocationFeed, parse_feed_page

__all__ = ["RemoteKeys", "RemoteRevocations"]

_log = logging.getLogger("tokenward.verify")
_MAX_BODY = 1 << 20  # a JWKS or a feed page beyond 1 MiB is not what tokenward sends


class _Gate:
    """One fetch at a time across threads and coroutines; the others wait or go on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        return self._lock.acquire(blocking=False)

    def leave(self) -> None:
        self._lock.release()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def wait(self, timeout: float) -> None:
        """Block until the fetch in flight ends (at most ``timeout`` seconds)."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()

    async def await_idle(self, limit: float) -> None:
        """Sleep until the fetch in flight ends (at most ``limit`` seconds), never blocking."""
        deadline = time.monotonic() + limit
        # Polled, not an asyncio.Event: the holder may be another thread or event loop.
        while self._lock.locked() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def _json_body(response: httpx.Response, what: str) -> Any:
    if response.status_code != 200:
        raise ValueError(f"{what} answered HTTP {response.status_code}")
    if len(response.content) > _MAX_BODY:
        raise ValueError(f"{what} answer is over 1 MiB")
    try:
        return response.json()
    except RecursionError:  # nesting deeper than the parser's stack: hostile, not JSON to us
        raise ValueError(f"{what} answer is nested too deeply") from None


def _log_failure(failures: int, message: str, *args: object) -> None:
    # The first failure of a run is news; the next ones, every few seconds, are noise.
    _log.log(logging.WARNING if failures == 1 else logging.DEBUG, message, *args)


class RemoteKeys:
    """Keys from a JWKS URL: cached for the answer's max-age, refetched on expiry or for an
    unknown kid, never twice within the cache's refetch floor."""

    def __init__(self, url: str, cache: JwksCache, clock: Clock, timeout: float) -> None:
        self.url = url
        self.cache = cache
        self._clock = clock
        self._timeout = timeout
        self._gate = _Gate()

    def _found(self, kid: str | None) -> VerifyKey:
        key = self.cache.keys.get(kid) if kid is not None else None
        if key is not None:
            return key
        if not self.cache.fetched:
            raise VerifierUnavailableError("keys_unavailable")
        raise VerificationError("unknown_kid")

    def key(self, kid: str | None, client: Callable[[], httpx.Client]) -> VerifyKey:
        """The key for ``kid``, fetching the set first when it is stale or lacks the kid."""
        if self.cache.stale(self._clock.monotonic()):
            self.refresh(client, wait=not self.cache.fetched, expired=True)
        if kid is not None and kid not in self.cache.keys:
            self.refresh(client, wait=True)
        return self._found(kid)

    async def akey(self, kid: str | None, client: Callable[[], httpx.AsyncClient]) -> VerifyKey:
        """:meth:`key` for event loops."""
        if self.cache.stale(self._clock.monotonic()):
            await self.arefresh(client, wait=not self.cache.fetched, expired=True)
        if kid is not None and kid not in self.cache.keys:
            await self.arefresh(client, wait=True)
        return self._found(kid)

    def _enter(self, *, expired: bool) -> bool:
        """Take the gate if a fetch is allowed now; re-checked inside, since another thread
        may have fetched while this one waited."""
        allowed = self.cache.may_fetch
        if not allowed(self._clock.monotonic(), expired=expired) or not self._gate.try_enter():
            return False
        if allowed(self._clock.monotonic(), expired=expired):
            self.cache.attempt(self._clock.monotonic())
            return True
        self._gate.leave()
        return False

    def refresh(
        self, client: Callable[[], httpx.Client], *, wait: bool, expired: bool = False
    ) -> None:
        """Fetch the set if allowed; with ``wait``, wait out a fetch in flight."""
        if not self._enter(expired=expired):
            if wait and self._gate.busy:  # its answer is the one we would get
                self._gate.wait(self._timeout)
            return
        try:
            self._take(client().get(self.url, timeout=self._timeout))
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)
        finally:
            self._gate.leave()

    async def arefresh(
        self, client: Callable[[], httpx.AsyncClient], *, wait: bool, expired: bool = False
    ) -> None:
        """:meth:`refresh` for event loops."""
        if not self._enter(expired=expired):
            if wait and self._gate.busy:
                await self._gate.await_idle(self._timeout)
            return
        try:
            self._take(await client().get(self.url, timeout=self._timeout))
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)
        finally:
            self._gate.leave()

    def _take(self, response: httpx.Response) -> None:
        document = _json_body(response, "JWKS")
        cache_control = response.headers.get("cache-control")
        self.cache.succeeded(document, cache_control, self._clock.monotonic())

    def _failed(self, exc: Exception) -> None:
        failures = self.cache.failed()
        kept = len(self.cache.keys)
        _log_failure(failures, "JWKS fetch failed (%s); keeping %d key(s)", _describe(exc), kept)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RemoteRevocations:
    """The revocation feed, polled lazily by the requests themselves (no background task)."""

    def __init__(
        self,
        url: str,
        auth: tuple[str, str],
        feed: RevocationFeed,
        clock: Clock,
        *,
        timeout: float,
        on_stale: Literal["accept", "reject"],
        max_token_lifetime: float,
    ) -> None:
        self.url = url
        self.feed = feed
        self.on_stale = on_stale
        self.max_token_lifetime = max_token_lifetime
        self._auth = auth
        self._clock = clock
        # Requests that arrive during a poll go on with what is known, so a poll must end
        # within the other half of the bound for the bound to hold.
        self._timeout = min(feed.interval, timeout)
        self._gate = _Gate()
        self._stale_warned = False
        self._hint_warned = False

    def check(self, claims: Claims, client: Callable[[], httpx.Client]) -> None:
        """Poll first when a poll is due, then refuse the token if its session ended."""
        now = self._clock.monotonic()
        if self.feed.due(now) and self._gate.try_enter():
            try:
                if self.feed.due(self._clock.monotonic()):
                    self.poll(client)
            finally:
                self._gate.leave()
        elif self.feed.last_success is None and self._gate.busy:
            self._gate.wait(self._timeout)  # the very first poll is in flight: wait for it
        self.enforce(claims)

    async def acheck(self, claims: Claims, client: Callable[[], httpx.AsyncClient]) -> None:
        """:meth:`check` for event loops."""
        now = self._clock.monotonic()
        if self.feed.due(now) and self._gate.try_enter():
            try:
                if self.feed.due(self._clock.monotonic()):
                    await self.apoll(client)
            finally:
                self._gate.leave()
        elif self.feed.last_success is None and self._gate.busy:
            await self._gate.await_idle(self._timeout)
        self.enforce(claims)

    def enforce(self, claims: Claims) -> None:
        """Refuse a revoked or too long-lived token; apply ``on_stale`` when the feed is stale."""
        if self.feed.is_revoked(claims.sid):
            raise RevokedTokenError()
        # The feed forgets a session max_token_lifetime after it ended: a longer-lived token
        # would outlive that memory, so it is refused now rather than let through later.
        if claims.exp - claims.iat > self.max_token_lifetime:
            raise VerificationError("lifetime_too_long")
        if not self.feed.stale(self._clock.monotonic()):
            return
        if self.on_stale == "reject":
            raise VerifierUnavailableError("revocations_unavailable")
        if not self._stale_warned:
            self._stale_warned = True
            _log.warning(
                "revocation feed: no answer for over %ss; accepting signed tokens whose "
                "sessions may have ended since (on_stale='accept')",
                self.feed.max_staleness,
            )

    def _params(self) -> dict[str, str]:
        return {} if self.feed.cursor is None else {"after": self.feed.cursor}

    def poll(self, client: Callable[[], httpx.Client]) -> None:
        """Ask the feed for what ended since the cursor; a failure keeps what is known."""
        self.feed.attempt(self._clock.monotonic())
        try:
            response = client().get(
                self.url, params=self._params(), auth=self._auth, timeout=self._timeout
            )
            self._take(response)
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)

    async def apoll(self, client: Callable[[], httpx.AsyncClient]) -> None:
        """:meth:`poll` for event loops."""
        self.feed.attempt(self._clock.monotonic())
        try:
            response = await client().get(
                self.url, params=self._params(), auth=self._auth, timeout=self._timeout
            )
            self._take(response)
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)

    def _take(self, response: httpx.Response) -> None:
        if response.status_code == 401:
            raise ValueError("the feed refused client_id/client_secret (HTTP 401)")
        if response.status_code == 400 and self.feed.cursor is not None:
            # tokenward no longer knows the cursor: start over from the whole window (no
            # `after`), which repeats what is known and misses nothing; retrying the same
            # cursor would fail forever.
            self.feed.cursor = None
            raise ValueError("the feed refused the cursor (HTTP 400); asking from the start")
        page = parse_feed_page(_json_body(response, "revocation feed"))
        recovering = self.feed.failures > 0 or self._stale_warned
        self.feed.succeeded(page, now=self._clock.monotonic(), wall=self._clock.time())
        if recovering:
            self._stale_warned = False
            _log.info("revocation feed answers again (%d ended sessions)", len(self.feed.revoked))
        hint = page.poll_interval
        if hint is not None and hint > self.feed.interval and not self._hint_warned:
            self._hint_warned = True
            _log.warning(
                "revocation feed suggests polling every %ss; revocation_bound=%ss needs %ss",
                hint,
                self.feed.bound,
                self.feed.interval,
            )

    def _failed(self, exc: Exception) -> None:
        failures = self.feed.failed()
        _log_failure(
            failures,
            "revocation feed poll failed (%s); enforcing the %d ended sessions known, "
            "retrying in %ss",
            _describe(exc),
            len(self.feed.revoked),
            self.feed.interval,
        )
