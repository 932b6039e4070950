"""Queries shared by the service and admin layers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tokenward.core.devices import device_label
from tokenward.core.events import NewEvent
from tokenward.core.mfa import Authentication
from tokenward.core.refresh import Rotation
from tokenward.core.sessions import EndReason, RotationOutcome, Session
from tokenward.storage.db import hold_lock
from tokenward.storage.models import EventRow, RevocationRow, SessionRow, UserRow
from tokenward.storage.port import EventInfo, SessionInfo

__all__ = [
    "EventInfo",
    "SessionInfo",
    "end_sessions",
    "end_sessions_of",
    "event_row",
    "events_page",
    "live_session_count",
    "live_sessions",
    "load_for_rotation",
    "log_revocations",
    "save_rotation",
    "session_row",
    "to_session",
    "user_by_email",
]


def event_row(event: NewEvent) -> EventRow:
    return EventRow(
        at=event.at,
        type=event.kind.value,
        user_id=event.user_id,
        session_id=event.session_id,
        ip=event.client.ip,
        user_agent=event.client.user_agent,
        detail=event.detail,
    )


def to_session(row: SessionRow) -> Session:
    """The core value of a session row."""
    return Session(
        id=row.id,
        user_id=row.user_id,
        generation=row.generation,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        max_expires_at=row.max_expires_at,
        rotated_at=row.rotated_at,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
        last_ip=row.last_ip,
        last_user_agent=row.last_user_agent,
        authentication=Authentication.load(
            row.amr, row.auth_time, row.mfa_time, created_at=row.created_at
        ),
    )


def session_row(session: Session) -> SessionRow:
    """A new row for a session that was just started."""
    return SessionRow(
        id=session.id,
        user_id=session.user_id,
        generation=session.generation,
        created_at=session.created_at,
        last_used_at=session.last_used_at,
        expires_at=session.expires_at,
        max_expires_at=session.max_expires_at,
        created_ip=session.last_ip,
        created_user_agent=session.last_user_agent,
        last_ip=session.last_ip,
        last_user_agent=session.last_user_agent,
        amr=session.authenticated.stored(),
        auth_time=session.authenticated.time,
        mfa_time=session.authenticated.second_factor_time,
    )


async def load_for_rotation(db: AsyncSession, session_id: str) -> tuple[Session, bool] | None:
    """The session, locked for the rotation, and whether its user is disabled.

    The row lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite) serialises rotations.
    """
    row = await db.get(SessionRow, session_id, with_for_update=True)
    if row is None:
        return None
    user = await db.get(UserRow, row.user_id)
    return to_session(row), user is None or user.disabled_at is not None


async def save_rotation(db: AsyncSession, outcome: RotationOutcome) -> int:
    """Write what a rotation decided (the sqlite3 path: FastTransaction.save_rotation); return
    how many sessions it ended (1 for a reuse of a live session, else 0)."""
    ended = 0
    session = outcome.session
    if outcome.decision is Rotation.ROTATE:
        await db.execute(
            update(SessionRow)
            .where(SessionRow.id == session.id)
            .values(
                generation=session.generation,
                rotated_at=session.rotated_at,
                last_used_at=session.last_used_at,
                expires_at=session.expires_at,
                last_ip=session.last_ip,
                last_user_agent=session.last_user_agent,
            ),
            execution_options={"synchronize_session": False},
        )
    elif outcome.reused:
        assert session.revoked_at is not None and session.revoked_reason  # noqa: S101
        reason = EndReason(session.revoked_reason)
        ended = len(
            await end_sessions(db, session.user_id, session.revoked_at, reason, only=session.id)
        )
    if outcome.event is not None:
        db.add(event_row(outcome.event))
    return ended


async def user_by_email(db: AsyncSession, email: str) -> UserRow | None:
    result = await db.execute(select(UserRow).where(UserRow.email == email))
    return result.scalar_one_or_none()


async def end_sessions(
    db: AsyncSession,
    user_id: str,
    now: datetime,
    reason: EndReason,
    *,
    only: str | None = None,
    keep: str | None = None,
    oldest: int | None = None,
) -> list[str]:
    """End the user's live sessions and log them for the feed; return their ids.

    ``only`` one session, all but ``keep``, or the ``oldest`` N by creation. Every way a
    session ends goes through here (the SQLite fast path writes the same two rows).
    """
    chosen = [SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None)]
    if only is not None:
        chosen.append(SessionRow.id == only)
    if keep is not None:
        chosen.append(SessionRow.id != keep)
    if oldest is not None:
        live = [SessionRow.expires_at > now, SessionRow.max_expires_at > now]
        first = select(SessionRow.id).where(*chosen, *live).order_by(SessionRow.created_at)
        chosen.append(SessionRow.id.in_(first.limit(oldest).scalar_subquery()))
    query = (
        update(SessionRow)
        .where(*chosen)
        .values(revoked_at=now, revoked_reason=reason.value)
        .returning(SessionRow.id)
    )
    result = await db.execute(query, execution_options={"synchronize_session": False})
    ended = list(result.scalars())
    await log_revocations(db, ended, now)
    return ended


END_BATCH = 500
"""Users whose sessions one UPDATE ends (SQLite's bound parameters are limited)."""


async def end_sessions_of(
    db: AsyncSession, user_ids: list[str], now: datetime, reason: EndReason
) -> list[str]:
    """End every live session of ``user_ids`` and log them for the feed; return their ids.
    The log's lock is taken once, after every session row is written (as end_sessions)."""
    ended: list[str] = []
    for start in range(0, len(user_ids), END_BATCH):
        query = (
            update(SessionRow)
            .where(
                SessionRow.user_id.in_(user_ids[start : start + END_BATCH]),
                SessionRow.revoked_at.is_(None),
            )
            .values(revoked_at=now, revoked_reason=reason.value)
            .returning(SessionRow.id)
        )
        result = await db.execute(query, execution_options={"synchronize_session": False})
        ended += result.scalars()
    await log_revocations(db, ended, now)
    return ended


async def log_revocations(db: AsyncSession, session_ids: list[str], now: datetime) -> None:
    """Append ended sessions to the revocation log, in commit order (see RevocationRow).

    The log's lock is taken last in the transaction and held to its commit, so ids are handed
    out in the order the transactions commit; nothing that takes row locks may follow it.
    """
    if not session_ids:
        return
    await hold_lock(db, "revocation-log")
    await db.execute(
        insert(RevocationRow), [{"session_id": sid, "revoked_at": now} for sid in session_ids]
    )


async def live_session_count(db: AsyncSession, user_id: str, now: datetime) -> int:
    """How many of the user's sessions are neither revoked nor expired."""
    query = select(func.count()).where(
        SessionRow.user_id == user_id,
        SessionRow.revoked_at.is_(None),
        SessionRow.expires_at > now,
        SessionRow.max_expires_at > now,
    )
    return int((await db.execute(query)).scalar_one())


async def live_sessions(
    db: AsyncSession, user_id: str, now: datetime, *, current: str | None = None
) -> list[SessionInfo]:
    """The user's sessions that are neither revoked nor expired, newest first."""
    query = (
        select(SessionRow)
        .where(
            SessionRow.user_id == user_id,
            SessionRow.revoked_at.is_(None),
            SessionRow.expires_at > now,
            SessionRow.max_expires_at > now,
        )
        .order_by(SessionRow.created_at.desc())
    )
    rows = (await db.execute(query)).scalars().all()
    return [
        SessionInfo(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=min(row.expires_at, row.max_expires_at),
            device=device_label(row.last_user_agent),
            ip=row.last_ip,
            current=row.id == current,
        )
        for row in rows
    ]


async def events_page(
    db: AsyncSession,
    *,
    user_id: str | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[EventInfo]:
    """Events newest first; with ``after_id``, only newer ones, oldest first (for following)."""
    query = select(EventRow)
    if user_id is not None:
        query = query.where(EventRow.user_id == user_id)
    if after_id is not None:
        query = query.where(EventRow.id > after_id).order_by(EventRow.id.asc())
    else:
        query = query.order_by(EventRow.id.desc())
    rows = (await db.execute(query.limit(limit))).scalars().all()
    return [
        EventInfo(
            id=row.id,
            at=row.at,
            type=row.type,
            user_id=row.user_id,
            session_id=row.session_id,
            ip=row.ip,
            user_agent=row.user_agent,
            detail=row.detail,
        )
        for row in rows
    ]
