"""The storage port over SQLAlchemy, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tokenward.core.events import NewEvent
from tokenward.core.sessions import EndReason, RotationOutcome, Session
from tokenward.core.users import Account
from tokenward.exceptions import EmailTakenError
from tokenward.storage import queries
from tokenward.storage.db import NO_KEY_UPDATE, Database
from tokenward.storage.models import ClientRow, EventRow, RevocationRow, SessionRow, UserRow
from tokenward.storage.port import (
    ClientRecord,
    EventInfo,
    RevocationEntry,
    SessionInfo,
    UnitOfWork,
)

__all__ = ["SqlStore", "SqlUnitOfWork"]


def _account(row: UserRow) -> Account:
    return Account(
        id=row.id,
        email=row.email,
        password_hash=row.password_hash,
        created_at=row.created_at,
        password_changed_at=row.password_changed_at,
        disabled_at=row.disabled_at,
    )


def _client(row: ClientRow) -> ClientRecord:
    return ClientRecord(row.id, row.name, row.secret_hash, row.created_at)


def _count(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) else 0


class SqlUnitOfWork:
    """One SQLAlchemy transaction, spoken to in core values (see storage.port.UnitOfWork)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    # -- accounts --------------------------------------------------------------------------
    async def account(self, user_id: str, *, lock: bool = False) -> Account | None:
        # FOR NO KEY UPDATE: it does not block the key-share locks that inserting a session or
        # an event takes on the user row, so it cannot deadlock with them (PostgreSQL).
        row = await self._db.get(UserRow, user_id, with_for_update=NO_KEY_UPDATE if lock else None)
        return None if row is None else _account(row)

    async def account_by_email(self, email: str) -> Account | None:
        row = await queries.user_by_email(self._db, email)
        return None if row is None else _account(row)

    async def add_account(self, account: Account) -> None:
        self._db.add(
            UserRow(
                id=account.id,
                email=account.email,
                password_hash=account.password_hash,
                created_at=account.created_at,
                password_changed_at=account.password_changed_at,
                disabled_at=account.disabled_at,
            )
        )
        try:
            await self._db.flush()
        except IntegrityError:
            raise EmailTakenError("an account with this email already exists") from None

    async def set_password_hash(
        self, user_id: str, password_hash: str, *, changed_at: datetime | None = None
    ) -> None:
        values: dict[str, object] = {"password_hash": password_hash}
        if changed_at is not None:
            values["password_changed_at"] = changed_at
        await self._db.execute(
            update(UserRow).where(UserRow.id == user_id).values(**values),
            execution_options={"synchronize_session": False},
        )

    async def set_disabled(self, user_id: str, disabled_at: datetime | None) -> None:
        await self._db.execute(
            update(UserRow).where(UserRow.id == user_id).values(disabled_at=disabled_at),
            execution_options={"synchronize_session": False},
        )

    async def accounts_with_live_sessions(self, now: datetime) -> list[tuple[Account, int]]:
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
        return [(_account(row), int(n)) for row, n in (await self._db.execute(query)).all()]

    # -- sessions --------------------------------------------------------------------------
    async def add_session(self, session: Session) -> None:
        self._db.add(queries.session_row(session))

    async def session(self, session_id: str, *, lock: bool = False) -> Session | None:
        row = await self._db.get(SessionRow, session_id, with_for_update=lock or None)
        return None if row is None else queries.to_session(row)

    async def session_and_account(self, session_id: str) -> tuple[Session, Account] | None:
        found = (
            await self._db.execute(
                select(SessionRow, UserRow)
                .join(UserRow, UserRow.id == SessionRow.user_id)
                .where(SessionRow.id == session_id)
            )
        ).first()
        if found is None:
            return None
        session, user = found
        return queries.to_session(session), _account(user)

    async def load_for_rotation(self, session_id: str) -> tuple[Session, bool] | None:
        return await queries.load_for_rotation(self._db, session_id)

    async def save_rotation(self, outcome: RotationOutcome) -> None:
        await queries.save_rotation(self._db, outcome)

    async def end_sessions(
        self,
        user_id: str,
        now: datetime,
        reason: EndReason,
        *,
        only: str | None = None,
        keep: str | None = None,
        oldest: int | None = None,
    ) -> list[str]:
        return await queries.end_sessions(
            self._db, user_id, now, reason, only=only, keep=keep, oldest=oldest
        )

    async def live_session_count(self, user_id: str, now: datetime) -> int:
        return await queries.live_session_count(self._db, user_id, now)

    async def live_sessions(
        self, user_id: str, now: datetime, *, current: str | None = None
    ) -> list[SessionInfo]:
        return await queries.live_sessions(self._db, user_id, now, current=current)

    # -- events ----------------------------------------------------------------------------
    def add_event(self, event: NewEvent) -> None:
        self._db.add(queries.event_row(event))

    async def events(
        self, *, user_id: str | None = None, after_id: int | None = None, limit: int = 50
    ) -> list[EventInfo]:
        return await queries.events_page(self._db, user_id=user_id, after_id=after_id, limit=limit)

    # -- resource servers and the revocation feed ------------------------------------------
    async def add_client(self, client: ClientRecord) -> None:
        self._db.add(
            ClientRow(
                id=client.id,
                name=client.name,
                secret_hash=client.secret_hash,
                created_at=client.created_at,
            )
        )

    async def client(self, client_id: str) -> ClientRecord | None:
        row = await self._db.get(ClientRow, client_id)
        return None if row is None else _client(row)

    async def clients(self) -> list[ClientRecord]:
        rows = await self._db.execute(select(ClientRow).order_by(ClientRow.created_at))
        return [_client(row) for row in rows.scalars()]

    async def delete_client(self, client_id: str) -> bool:
        result = await self._db.execute(delete(ClientRow).where(ClientRow.id == client_id))
        return bool(_count(result))

    async def last_revocation(self) -> int:
        last = (await self._db.execute(select(func.max(RevocationRow.id)))).scalar_one()
        return int(last or 0)

    async def revocations(
        self, *, after: int, upto: int, since: datetime | None, limit: int
    ) -> list[RevocationEntry]:
        query = (
            select(RevocationRow.id, RevocationRow.session_id, RevocationRow.revoked_at)
            .where(RevocationRow.id > after, RevocationRow.id <= upto)
            .order_by(RevocationRow.id)
            .limit(limit)
        )
        if since is not None:
            query = query.where(RevocationRow.revoked_at >= since)
        rows = (await self._db.execute(query)).all()
        return [RevocationEntry(number, sid, at) for number, sid, at in rows]

    # -- housekeeping ----------------------------------------------------------------------
    async def prune(self, *, ended_before: datetime, events_before: datetime) -> tuple[int, int]:
        sessions = await self._db.execute(
            delete(SessionRow).where(
                or_(
                    SessionRow.revoked_at < ended_before,
                    SessionRow.expires_at < ended_before,
                    SessionRow.max_expires_at < ended_before,
                )
            )
        )
        events = await self._db.execute(delete(EventRow).where(EventRow.at < events_before))
        # The feed reaches back one access token lifetime; the grace covers it many times.
        await self._db.execute(delete(RevocationRow).where(RevocationRow.revoked_at < ended_before))
        return _count(sessions), _count(events)


class SqlStore:
    """Units of work on a :class:`Database` (see storage.port.Store)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        async with self.database.write() as db:
            yield SqlUnitOfWork(db)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[UnitOfWork]:
        async with self.database.read() as db:
            yield SqlUnitOfWork(db)
