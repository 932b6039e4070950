"""Operator actions behind the CLI: users, their sessions, the event log, housekeeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select

from tokenward.app.service import AuthService
from tokenward.core.events import EventType
from tokenward.core.sessions import EndReason
from tokenward.core.users import normalize_email
from tokenward.exceptions import InvalidEmailError, KeyRotationError, UnknownUserError
from tokenward.storage import EventRow, RevocationRow, SessionRow, UserRow
from tokenward.storage.db import NO_KEY_UPDATE
from tokenward.storage.queries import (
    EventInfo,
    SessionInfo,
    end_sessions,
    events_page,
    live_sessions,
    new_event,
    user_by_email,
)

__all__ = ["Admin", "KeyInfo", "PruneReport", "UserSummary"]

ENDED_SESSION_GRACE = timedelta(days=1)
"""How long an ended session's row is kept (a replay in that window is still recognised)."""


@dataclass(frozen=True, slots=True)
class UserSummary:
    id: str
    email: str
    created_at: datetime
    disabled: bool
    live_sessions: int


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    alg: str
    state: str
    activates_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True, slots=True)
class PruneReport:
    sessions: int
    events: int


class Admin:
    """What an operator may do; every method names users by email."""

    def __init__(self, service: AuthService) -> None:
        self.service = service
        self.db = service.db

    async def _user(self, email: str) -> UserRow:
        try:
            normalized = normalize_email(email)
        except InvalidEmailError:
            raise UnknownUserError(f"no user with email {email!r}") from None
        async with self.db.read() as db:
            row = await user_by_email(db, normalized)
        if row is None:
            raise UnknownUserError(f"no user with email {normalized!r}")
        return row

    async def list_users(self) -> list[UserSummary]:
        now = self.service.clock()
        live = (
            select(SessionRow.user_id, func.count().label("n"))
            .where(
                SessionRow.revoked_at.is_(None),
                SessionRow.expires_at > now,
                SessionRow.max_expires_at > now,
            )
            .group_by(SessionRow.user_id)
            .subquery()
        )
        query = (
            select(UserRow, func.coalesce(live.c.n, 0))
            .outerjoin(live, live.c.user_id == UserRow.id)
            .order_by(UserRow.email)
        )
        async with self.db.read() as db:
            rows = (await db.execute(query)).all()
        return [
            UserSummary(user.id, user.email, user.created_at, user.disabled_at is not None, n)
            for user, n in rows
        ]

    async def set_disabled(self, email: str, disabled: bool) -> int:
        """Disable (ending every session) or enable a user; return the sessions ended."""
        row = await self._user(email)
        now = self.service.clock()
        async with self.db.write() as db:
            user = await db.get(UserRow, row.id, with_for_update=NO_KEY_UPDATE)
            assert user is not None  # noqa: S101 - users are never deleted
            user.disabled_at = now if disabled else None
            ended = (
                await end_sessions(db, user.id, now, EndReason.USER_DISABLED) if disabled else []
            )
            kind = EventType.USER_DISABLED if disabled else EventType.USER_ENABLED
            db.add(new_event(kind, now, user_id=user.id, detail={"sessions_ended": len(ended)}))
        return len(ended)

    async def sessions(self, email: str) -> list[SessionInfo]:
        row = await self._user(email)
        return await live_sessions(self.db, row.id, self.service.clock())

    async def revoke(self, email: str, session_id: str | None = None) -> int:
        """End one session of the user, or all of them; return how many ended."""
        row = await self._user(email)
        now = self.service.clock()
        async with self.db.write() as db:
            ended = await end_sessions(db, row.id, now, EndReason.REVOKED, only=session_id)
            for sid in ended:
                db.add(
                    new_event(
                        EventType.SESSION_REVOKED,
                        now,
                        user_id=row.id,
                        session_id=sid,
                        detail={"by": "operator"},
                    )
                )
        return len(ended)

    async def events(
        self, email: str | None = None, *, after_id: int | None = None, limit: int = 50
    ) -> list[EventInfo]:
        user_id = (await self._user(email)).id if email else None
        return await events_page(self.db, user_id=user_id, after_id=after_id, limit=limit)

    async def keys(self) -> list[KeyInfo]:
        now = self.service.clock()
        keyring = await self.service.keys.keyring()
        return [
            KeyInfo(key.kid, key.alg, keyring.state(key, now), key.activates_at, key.retired_at)
            for key in keyring.keys
        ]

    async def rotate_key(self, *, immediately: bool = False) -> KeyInfo:
        """A new signing key: published now, signing after the JWKS cache lifetime."""
        if self.service.settings.signing_alg == "HS256":
            raise KeyRotationError("HS256 uses TOKENWARD_HS256_SECRET: there is no key to rotate")
        key = await self.service.keys.rotate(self.service.clock(), immediately=immediately)
        return KeyInfo(key.kid, key.alg, "upcoming", key.activates_at, None)

    async def retire_key(self, kid: str) -> None:
        """Withdraw a key at once: tokens it signed stop verifying (a compromised key)."""
        now = self.service.clock()
        keyring = await self.service.keys.keyring()
        if keyring.has_signer(now) and keyring.signer(now).kid == kid:
            successors = [
                k
                for k in keyring.keys
                if k.kid != kid
                and k.retired_at is None
                and k.alg == keyring.alg
                and k.activates_at <= now
            ]
            if not successors:
                raise KeyRotationError(
                    f"{kid} is the only signing key: run `keys rotate --now` first"
                )
        if not await self.service.keys.retire(kid, now):
            raise KeyRotationError(f"no key {kid!r} to retire")

    async def prune(self) -> PruneReport:
        """Delete sessions ended more than a day ago and events past their retention."""
        now = self.service.clock()
        cutoff = now - ENDED_SESSION_GRACE
        events_cutoff = now - self.service.settings.event_retention
        async with self.db.write() as db:
            sessions = await db.execute(
                delete(SessionRow).where(
                    or_(
                        SessionRow.revoked_at < cutoff,
                        SessionRow.expires_at < cutoff,
                        SessionRow.max_expires_at < cutoff,
                    )
                )
            )
            events = await db.execute(delete(EventRow).where(EventRow.at < events_cutoff))
            # The feed reaches back one access token lifetime; a day covers it many times.
            await db.execute(delete(RevocationRow).where(RevocationRow.revoked_at < cutoff))
        return PruneReport(sessions=_rowcount(sessions), events=_rowcount(events))


def _rowcount(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) else 0
