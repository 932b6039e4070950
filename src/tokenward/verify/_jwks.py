"""The cached key set: what it holds, how long it is fresh, when it may be fetched (no I/O)."""

from __future__ import annotations

import logging
import math
from typing import Any

from tokenward.verify._keys import VerifyKey, keys_from_jwks

__all__ = ["JwksCache", "max_age_of"]

_log = logging.getLogger("tokenward.verify")


def max_age_of(cache_control: str | None, *, default: float, limits: tuple[float, float]) -> float:
    """How long a JWKS answer stays fresh: its ``max-age`` (RFC 9111 5.2.2.1), else ``default``,
    clamped to ``limits`` so that neither ``max-age=0`` nor a year can be forced on us."""
    seconds = default
    for directive in (cache_control or "").split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in {"no-store", "no-cache"}:
            seconds = limits[0]
            break
        if name == "max-age":
            try:
                seconds = float(int(value.strip().strip('"')))
            except ValueError:
                continue
            except OverflowError:  # more seconds than a float holds: as long as allowed
                seconds = limits[1]
    low, high = limits
    return min(max(seconds, low), high)


class JwksCache:
    """The keys of the last good JWKS, kept until a later fetch succeeds.

    A failed fetch never drops keys: tokenward being down must not log every user out. A set
    past its max-age is refetched when next needed; fetches for a kid the set lacks, and
    retries after a failure, are at least ``refetch_floor`` seconds apart, so a stream of
    tokens with made-up kids cannot turn into a stream of requests to tokenward.
    """

    def __init__(
        self, *, refetch_floor: float, default_max_age: float, max_age_limits: tuple[float, float]
    ) -> None:
        self.refetch_floor = refetch_floor
        self.default_max_age = default_max_age
        self.max_age_limits = max_age_limits
        self.keys: dict[str, VerifyKey] = {}
        self.fetched = False
        self.fresh_until = -math.inf
        self.last_attempt = -math.inf
        self.failures = 0
        self._parsed: dict[str, VerifyKey] = {}
        self._skipped: list[str] = []

    def stale(self, now: float) -> bool:
        """True once the cached set has outlived its max-age (or was never fetched)."""
        return now >= self.fresh_until

    def may_fetch(self, now: float, *, expired: bool = False) -> bool:
        """True when a fetch is allowed now.

        A set that simply outlived its max-age is refetched at once (max-age is clamped, so
        that is never often); any other fetch (an unknown kid, a retry after a failure) waits
        until the last attempt is ``refetch_floor`` seconds old.
        """
        if expired and self.failures == 0 and self.stale(now):
            return True
        return now - self.last_attempt >= self.refetch_floor

    def attempt(self, now: float) -> None:
        """Record that a fetch starts now."""
        self.last_attempt = now

    def succeeded(self, document: Any, cache_control: str | None, now: float) -> None:
        """Take a fetched JWKS; ``ValueError`` (keeping the old keys) if it is not one."""
        keys, parsed, skipped = keys_from_jwks(document, self._parsed)
        if skipped != self._skipped:
            for reason in skipped:
                _log.warning("JWKS: ignoring %s", reason)
            self._skipped = skipped
        self.keys, self._parsed = keys, parsed
        self.fresh_until = now + max_age_of(
            cache_control, default=self.default_max_age, limits=self.max_age_limits
        )
        self.fetched = True
        self.failures = 0

    def failed(self) -> int:
        """Count a failed fetch; return how many failed in a row."""
        self.failures += 1
        return self.failures
