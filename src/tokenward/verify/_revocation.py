"""What the revocation feed has said: ended sessions, the cursor, and how fresh it is (no I/O).

The feed is ``GET {issuer}/auth/revocations?after=<cursor>`` with HTTP Basic client
credentials, answering ``{"revoked": [{"sid", "revoked_at"}], "cursor", "poll_interval"}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = ["FeedPage", "RevocationFeed", "parse_feed_page"]


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One answer of the feed."""

    revoked: tuple[tuple[str, float], ...]
    cursor: str
    poll_interval: int | None


def _number(value: Any) -> TypeGuard[int | float]:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float is no timestamp
        return False


def parse_feed_page(body: Any) -> FeedPage:
    """Read a feed answer strictly; ``ValueError`` for anything off-contract.

    A page is taken whole or not at all: dropping one bad entry would forget a revocation.
    """
    if not isinstance(body, dict) or not isinstance(body.get("revoked"), list):
        raise ValueError("not a revocation feed page")
    revoked = []
    for entry in body["revoked"]:
        if not isinstance(entry, dict):
            raise ValueError("a revoked entry is not an object")
        sid, at = entry.get("sid"), entry.get("revoked_at")
        if not isinstance(sid, str) or not sid or not _number(at):
            raise ValueError("a revoked entry lacks sid or revoked_at")
        revoked.append((sid, float(at)))
    cursor = body.get("cursor")
    if not isinstance(cursor, str):
        raise ValueError("no cursor")
    interval = body.get("poll_interval")
    if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)):
        raise ValueError("poll_interval is not an integer")
    return FeedPage(tuple(revoked), cursor, interval)


class RevocationFeed:
    """Ended sessions by sid, each kept ``retention`` seconds after it ended (by then every
    token of it has expired), and the times of the last poll and the last good one.

    ``due`` says when to poll: more than ``bound / 2`` after the last attempt. A request that
    finds a poll due waits for it, so a revoked session's token passes at most ``bound / 2``
    plus one poll (at most ``bound / 2`` itself, the poll timeout) after the feed shows it.
    """

    def __init__(self, *, bound: float, max_staleness: float, retention: float) -> None:
        self.bound = bound
        self.max_staleness = max_staleness
        self.retention = retention
        self.revoked: dict[str, float] = {}
        self.cursor: str | None = None
        self.poll_interval_hint: int | None = None
        self.last_attempt = -math.inf
        self.last_success: float | None = None
        self.failures = 0

    @property
    def interval(self) -> float:
        """Seconds between polls: half the bound, so one poll fits in the other half."""
        return self.bound / 2

    def due(self, now: float) -> bool:
        """True when more than :attr:`interval` has passed since the last attempt."""
        return now - self.last_attempt > self.interval

    def attempt(self, now: float) -> None:
        """Record that a poll starts now (a failure waits a whole interval for the retry)."""
        self.last_attempt = now

    def succeeded(self, page: FeedPage, *, now: float, wall: float) -> None:
        """Merge a page: add its sessions, forget those whose tokens are all expired."""
        horizon = wall - self.retention
        revoked = {sid: at for sid, at in self.revoked.items() if at >= horizon}
        for sid, at in page.revoked:
            if at >= horizon:
                revoked[sid] = max(at, revoked.get(sid, at))
        self.revoked = revoked  # one reference swap: readers never see a half-merged dict
        self.cursor = page.cursor
        self.poll_interval_hint = page.poll_interval
        self.last_success = now
        self.failures = 0

    def failed(self) -> int:
        """Count a failed poll; return how many failed in a row."""
        self.failures += 1
        return self.failures

    def is_revoked(self, sid: str) -> bool:
        """True when the feed said session ``sid`` ended."""
        return sid in self.revoked

    def stale(self, now: float) -> bool:
        """True when no poll succeeded within ``max_staleness`` seconds (or none ever did)."""
        return self.last_success is None or now - self.last_success > self.max_staleness
