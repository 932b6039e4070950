"""Refresh tokens: an HMAC over (session id, generation), so nothing secret is stored at rest.

The design of Supabase's v2 refresh tokens: the database keeps only the session's current
generation (a counter). A token is ``twr_`` + base64url(version, session id, generation, MAC).
Because the MAC is deterministic, a token that was rotated out moments ago can be answered
with *the same* successor (no fork in the chain), and anything older is proof of theft.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum

from tokenward.exceptions import TokenError

__all__ = [
    "PresentedRefreshToken",
    "RefreshResult",
    "RefreshTokenCodec",
    "Rotation",
    "decide_rotation",
]

_PREFIX = "twr_"
_VERSION = 1
_MAC_DOMAIN = b"tokenward-refresh-v1\x00"
_RAW_LENGTH = 1 + 16 + 8 + 32  # 57 bytes: 76 base64url characters, no padding
_SHAPE = re.compile(r"twr_[A-Za-z0-9_-]{76}")


@dataclass(frozen=True, slots=True)
class PresentedRefreshToken:
    """A refresh token whose MAC checked out: it was issued by this server."""

    session_id: str
    generation: int


class RefreshTokenCodec:
    """Makes and checks refresh tokens with one 256-bit HMAC key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the refresh token key must be at least 32 bytes")
        self._secret = secret

    def _mac(self, session: bytes, generation: int) -> bytes:
        message = _MAC_DOMAIN + session + generation.to_bytes(8, "big")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def issue(self, session_id: str, generation: int) -> str:
        session = uuid.UUID(session_id).bytes
        raw = bytes([_VERSION]) + session + generation.to_bytes(8, "big")
        raw += self._mac(session, generation)
        return _PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def parse(self, token: str) -> PresentedRefreshToken:
        """Check shape and MAC; raise :class:`TokenError` (one reason for all) otherwise."""
        if not _SHAPE.fullmatch(token):
            raise TokenError("malformed refresh token")
        raw = base64.urlsafe_b64decode(token[len(_PREFIX) :])
        if raw[0] != _VERSION:
            raise TokenError("malformed refresh token")
        session, generation = raw[1:17], int.from_bytes(raw[17:25], "big")
        if not hmac.compare_digest(raw[25:], self._mac(session, generation)):
            raise TokenError("refresh token MAC mismatch")
        return PresentedRefreshToken(str(uuid.UUID(bytes=session)), generation)


class Rotation(Enum):
    """What to do with a presented refresh token, given its session's state."""

    ROTATE = "rotate"
    """It is the current token: advance the generation and issue the next."""
    REPLAY_SUCCESSOR = "replay_successor"
    """It was rotated out within the reuse interval (never when it is 0): answer with the
    same successor."""
    REUSE = "reuse"
    """It was rotated out earlier than that: theft; end the whole session."""
    INVALID = "invalid"
    """A generation this session never reached (e.g. restored from an old backup)."""


class RefreshResult(StrEnum):
    """How a presented refresh token was answered (a metric's label)."""

    ROTATED = "rotated"
    GRACE = "grace"
    """A predecessor within the reuse interval: answered with the same successor."""
    REUSE_DETECTED = "reuse_detected"
    INVALID = "invalid"
    """Malformed, forged, of an unknown session, or of a generation never reached."""
    EXPIRED = "expired"
    """Its session had ended: timed out, signed out or revoked."""

    @classmethod
    def of(cls, decision: Rotation) -> RefreshResult:
        return _RESULTS[decision]


_RESULTS = {
    Rotation.ROTATE: RefreshResult.ROTATED,
    Rotation.REPLAY_SUCCESSOR: RefreshResult.GRACE,
    Rotation.REUSE: RefreshResult.REUSE_DETECTED,
    Rotation.INVALID: RefreshResult.INVALID,
}


def decide_rotation(
    *,
    presented: int,
    current: int,
    rotated_at: datetime | None,
    now: datetime,
    reuse_interval: timedelta,
) -> Rotation:
    """The rotation rule, as a pure function of the session state."""
    if presented == current:
        return Rotation.ROTATE
    if presented > current:
        return Rotation.INVALID
    # Inclusive bound for a positive interval; with zero there is no grace at all, not even
    # at the same instant (or when this instance's clock is behind the one that rotated).
    recent = (
        rotated_at is not None
        and reuse_interval > timedelta(0)
        and now - rotated_at <= reuse_interval
    )
    if presented == current - 1 and recent:
        return Rotation.REPLAY_SUCCESSOR
    return Rotation.REUSE
