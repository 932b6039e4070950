"""A session as a value: starting, the liveness check, rotation and ending, each written once.

Pure: no I/O, no settings, no clock reads. The time, the lifetimes and who is asking are
passed in; what to write is handed back (a new ``Session`` and the event to record), and the
storage adapters (SQLAlchemy, the plain-``sqlite3`` refresh path) only load and save it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.mfa import Authentication
from tokenward.core.refresh import Rotation, decide_rotation
from tokenward.exceptions import SessionEndedError, TokenError

__all__ = ["EndReason", "RotationOutcome", "Session", "SessionLifetimes"]


class EndReason(StrEnum):
    """Why a session ended (``sessions.revoked_reason``). Values are stored: never rename."""

    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    REVOKED = "revoked"
    """By its user, an operator or a resource server (the event says which)."""
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a reason, not a password
    REUSE_DETECTED = "reuse_detected"
    USER_DISABLED = "user_disabled"
    SESSION_LIMIT = "session_limit"
    """A newer sign-in went past ``TOKENWARD_MAX_SESSIONS_PER_USER``."""
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a reason, not a password
    ACCOUNT_DELETED = "account_deleted"
    ROLES_CHANGED = "roles_changed"
    """An operator changed the user's roles and asked for their sessions to end."""


@dataclass(frozen=True, slots=True)
class SessionLifetimes:
    """How long sessions live: idle (pushed out by each rotation) and absolute."""

    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    """What a presented refresh token leads to: the session as it is to be saved, the event to
    record (none for a replayed successor) and whether the session was ended as stolen."""

    decision: Rotation
    session: Session
    event: NewEvent | None

    @property
    def reused(self) -> bool:
        return self.decision is Rotation.REUSE


@dataclass(frozen=True, slots=True)
class Session:
    """One login. Its refresh token is an HMAC over (id, generation): only the counter is kept."""

    id: str
    user_id: str
    generation: int
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    """Idle timeout: pushed out by each rotation, never past ``max_expires_at``."""
    max_expires_at: datetime
    """Absolute end of the session."""
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    last_ip: str | None = None
    last_user_agent: str | None = None
    authentication: Authentication | None = None
    """How and when its user last authenticated (None: a password, at ``created_at``)."""

    @classmethod
    def start(
        cls,
        *,
        id: str,
        user_id: str,
        now: datetime,
        lifetimes: SessionLifetimes,
        client: ClientInfo,
        authentication: Authentication | None = None,
    ) -> Session:
        """A new session at generation 0 (signed in with a password at ``now`` unless
        ``authentication`` says otherwise)."""
        max_expires_at = now + lifetimes.absolute
        return cls(
            id=id,
            user_id=user_id,
            generation=0,
            created_at=now,
            last_used_at=now,
            expires_at=min(now + lifetimes.idle, max_expires_at),
            max_expires_at=max_expires_at,
            last_ip=client.ip,
            last_user_agent=client.user_agent,
            authentication=authentication or Authentication.password(now),
        )

    @property
    def authenticated(self) -> Authentication:
        """How and when the user last authenticated in this session."""
        return self.authentication or Authentication.password(self.created_at)

    @property
    def ends_at(self) -> datetime:
        """When the session ends unless it is used: the nearer of its two limits."""
        return min(self.expires_at, self.max_expires_at)

    def check_alive(self, now: datetime, *, user_disabled: bool = False) -> None:
        """Raise :class:`SessionEndedError` unless the session is live and its user enabled."""
        if self.revoked_at is not None:
            raise SessionEndedError("session revoked")
        if now >= self.ends_at:
            raise SessionEndedError("session expired")
        if user_disabled:
            raise SessionEndedError("user disabled")

    def end(self, reason: EndReason, now: datetime) -> Session:
        """The session ended at ``now``; an ended session stays as it ended."""
        if self.revoked_at is not None:
            return self
        return replace(self, revoked_at=now, revoked_reason=reason.value)

    def rotate(
        self,
        presented: int,
        now: datetime,
        *,
        client: ClientInfo,
        reuse_interval: timedelta,
        idle: timedelta,
        user_disabled: bool = False,
    ) -> RotationOutcome:
        """Apply the rotation rule to the refresh token of generation ``presented``.

        The current token rotates (the idle end moves out, never past the absolute end); the
        one rotated out last, within the reuse interval, gets the same successor again; any
        older one ends the session as stolen. Raises :class:`SessionEndedError` for an ended
        session and :class:`TokenError` for a generation the session never reached.
        """
        self.check_alive(now, user_disabled=user_disabled)
        decision = decide_rotation(
            presented=presented,
            current=self.generation,
            rotated_at=self.rotated_at,
            now=now,
            reuse_interval=reuse_interval,
        )
        if decision is Rotation.INVALID:
            raise TokenError("generation ahead of the session")
        if decision is Rotation.REPLAY_SUCCESSOR:
            return RotationOutcome(decision, self, None)
        if decision is Rotation.REUSE:
            event = NewEvent(
                EventType.REFRESH_REUSE_DETECTED,
                now,
                client,
                user_id=self.user_id,
                session_id=self.id,
                detail=self._reuse_detail(presented, client, now),
            )
            return RotationOutcome(decision, self.end(EndReason.REUSE_DETECTED, now), event)
        rotated = replace(
            self,
            generation=self.generation + 1,
            rotated_at=now,
            last_used_at=now,
            expires_at=min(now + idle, self.max_expires_at),
            last_ip=client.ip,
            last_user_agent=client.user_agent,
        )
        event = NewEvent(EventType.REFRESH, now, client, user_id=self.user_id, session_id=self.id)
        return RotationOutcome(decision, rotated, event)

    def _reuse_detail(self, presented: int, client: ClientInfo, now: datetime) -> dict[str, Any]:
        """What ``session.reuse_detected`` records: when, how far behind, and who."""
        rotated = self.rotated_at
        return {
            "rotated_seconds_ago": (now - rotated).total_seconds() if rotated else None,
            "generations_behind": self.generation - presented,
            "first_use": {"ip": self.last_ip, "user_agent": self.last_user_agent},
            "reuse": {"ip": client.ip, "user_agent": client.user_agent},
        }
