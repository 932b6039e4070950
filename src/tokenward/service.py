"""The application layer: register, login, refresh with rotation, logout, authenticate.

It joins the domain (passwords, tokens, rotation rule) to the store, one transaction per
operation, and knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tokenward.audit import EventType
from tokenward.config import Settings
from tokenward.exceptions import (
    AuthenticationError,
    EmailTakenError,
    InvalidEmailError,
    RefreshTokenReusedError,
    SessionEndedError,
    TokenError,
)
from tokenward.keys import SigningKey, load_or_create_refresh_secret, load_signing_key
from tokenward.passwords import PasswordHasher, PasswordPolicy, normalize_password
from tokenward.refresh import RefreshTokenCodec, Rotation, decide_rotation
from tokenward.store import Database, EventRow, SessionRow, UserRow
from tokenward.tokens import AccessClaims, AccessTokenCodec
from tokenward.users import User, normalize_email

__all__ = ["AuthService", "ClientInfo", "ImportReport", "IssuedTokens"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is asking, as far as the transport can tell. Never holds a secret."""

    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.user_agent is not None and len(self.user_agent) > 512:
            object.__setattr__(self, "user_agent", self.user_agent[:512])


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    user_id: str


@dataclass
class ImportReport:
    imported: int = 0
    skipped_existing: int = 0
    rejected: list[int] = field(default_factory=list)
    """1-based numbers of the records that were not valid."""


def _user(row: UserRow) -> User:
    return User(id=row.id, email=row.email, created_at=row.created_at)


def _event(
    kind: EventType,
    now: datetime,
    client: ClientInfo | None = None,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> EventRow:
    client = client or ClientInfo()
    return EventRow(
        at=now,
        type=kind.value,
        user_id=user_id,
        session_id=session_id,
        ip=client.ip,
        user_agent=client.user_agent,
        detail=detail,
    )


class AuthService:
    """Everything tokenward does, behind typed methods. One instance per process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        signing_key: SigningKey,
        refresh_secret: bytes,
        hasher: PasswordHasher | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.signing_key = signing_key
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        self.policy = PasswordPolicy(min_length=settings.password_min_length)
        self.access = AccessTokenCodec(
            signing_key,
            issuer=settings.issuer,
            audience=settings.audience,
            ttl=settings.access_ttl,
        )
        self.refresh_tokens = RefreshTokenCodec(refresh_secret)

    @classmethod
    async def open(cls, settings: Settings, *, clock: Clock = utcnow) -> AuthService:
        """Load (or make) the keys, connect, and bring the schema up to date."""
        db = Database(settings.sqlalchemy_url)
        await db.migrate()
        return cls(
            settings,
            db,
            signing_key=load_signing_key(settings),
            refresh_secret=load_or_create_refresh_secret(settings),
            clock=clock,
        )

    async def close(self) -> None:
        await self.db.dispose()

    # -- users -------------------------------------------------------------------------------

    async def register(self, email: str, password: str) -> User:
        """Create a user. Raises InvalidEmailError, PasswordPolicyError or EmailTakenError."""
        email = normalize_email(email)
        password = normalize_password(password)
        self.policy.check(password, email=email)
        async with self.db.read() as db:
            if await self._user_by_email(db, email) is not None:
                raise EmailTakenError("an account with this email already exists")
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        now = self.clock()
        row = UserRow(
            id=str(uuid.uuid4()),
            email=email,
            password_hash=password_hash,
            created_at=now,
            password_changed_at=now,
        )
        try:
            async with self.db.write() as db:
                db.add(row)
                db.add(_event(EventType.USER_REGISTERED, now, user_id=row.id))
        except IntegrityError:
            raise EmailTakenError("an account with this email already exists") from None
        return _user(row)

    async def import_users(self, records: Iterable[Mapping[str, Any]]) -> ImportReport:
        """Take users with existing hashes (argon2 or bcrypt): no password reset needed."""
        report = ImportReport()
        now = self.clock()
        for number, record in enumerate(records, start=1):
            email, password_hash = record.get("email"), record.get("password_hash")
            if not isinstance(email, str) or not isinstance(password_hash, str):
                report.rejected.append(number)
                continue
            try:
                email = normalize_email(email)
            except InvalidEmailError:
                report.rejected.append(number)
                continue
            if not PasswordHasher.is_supported_hash(password_hash):
                report.rejected.append(number)
                continue
            async with self.db.write() as db:
                if await self._user_by_email(db, email) is not None:
                    report.skipped_existing += 1
                    continue
                user_id = str(uuid.uuid4())
                db.add(
                    UserRow(
                        id=user_id,
                        email=email,
                        password_hash=password_hash,
                        created_at=now,
                        password_changed_at=now,
                    )
                )
                db.add(_event(EventType.USER_IMPORTED, now, user_id=user_id))
            report.imported += 1
        return report

    @staticmethod
    async def _user_by_email(db: AsyncSession, email: str) -> UserRow | None:
        result = await db.execute(select(UserRow).where(UserRow.email == email))
        return result.scalar_one_or_none()

    # -- sessions ----------------------------------------------------------------------------

    async def login(self, email: str, password: str, client: ClientInfo) -> IssuedTokens:
        """Check the password and start a session. Raises AuthenticationError, one for all."""
        password = normalize_password(password)
        try:
            email = normalize_email(email)
        except InvalidEmailError:
            email = ""
        row = None
        if email:
            async with self.db.read() as db:
                row = await self._user_by_email(db, email)
        # An unknown email still costs one hash verification: no timing oracle.
        ok, new_hash = await asyncio.to_thread(
            self.hasher.verify, password, row.password_hash if row else None
        )
        now = self.clock()
        if row is None or not ok or row.disabled_at is not None:
            async with self.db.write() as db:
                db.add(
                    _event(
                        EventType.LOGIN_FAILED,
                        now,
                        client,
                        user_id=row.id if row else None,
                        detail={"reason": "disabled" if ok and row else "bad_credentials"},
                    )
                )
            raise AuthenticationError("email or password is incorrect")
        session = SessionRow(
            id=str(uuid.uuid4()),
            user_id=row.id,
            generation=0,
            created_at=now,
            last_used_at=now,
            expires_at=min(now + self.settings.refresh_ttl, now + self.settings.session_max_age),
            max_expires_at=now + self.settings.session_max_age,
            created_ip=client.ip,
            created_user_agent=client.user_agent,
            last_ip=client.ip,
            last_user_agent=client.user_agent,
        )
        async with self.db.write() as db:
            db.add(session)
            if new_hash is not None:
                # A legacy bcrypt hash (or weaker argon2 parameters) upgraded on the way in.
                user = await db.get(UserRow, row.id)
                if user is not None:
                    user.password_hash = new_hash
            db.add(
                _event(
                    EventType.LOGIN_SUCCEEDED, now, client, user_id=row.id, session_id=session.id
                )
            )
        return self._issue(session, now)

    def _issue(self, session: SessionRow, now: datetime) -> IssuedTokens:
        return IssuedTokens(
            access_token=self.access.issue(
                user_id=session.user_id, session_id=session.id, now=now.timestamp()
            ),
            expires_in=self.access.ttl_seconds,
            refresh_token=self.refresh_tokens.issue(session.id, session.generation),
            refresh_expires_in=max(0, int((session.expires_at - now).total_seconds())),
            session_id=session.id,
            user_id=session.user_id,
        )

    async def refresh(self, refresh_token: str, client: ClientInfo) -> IssuedTokens:
        """Rotate: the current token gets a successor; a recent predecessor gets the same one.

        Raises RefreshTokenReusedError (after ending the session) for an older predecessor,
        SessionEndedError for an ended session, TokenError for anything unknown or malformed.
        """
        presented = self.refresh_tokens.parse(refresh_token)
        now = self.clock()
        reused = False
        async with self.db.write() as db:
            # The row lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite) serialises rotations.
            session = await db.get(SessionRow, presented.session_id, with_for_update=True)
            if session is None:
                raise TokenError("unknown session")
            user = await db.get(UserRow, session.user_id)
            self._check_alive(session, user, now)
            decision = decide_rotation(
                presented=presented.generation,
                current=session.generation,
                rotated_at=session.rotated_at,
                now=now,
                reuse_interval=self.settings.refresh_reuse_interval,
            )
            if decision is Rotation.INVALID:
                raise TokenError("generation ahead of the session")
            if decision is Rotation.REUSE:
                reused = True
                self._end_reused_session(db, session, presented.generation, client, now)
            elif decision is Rotation.ROTATE:
                session.generation += 1
                session.rotated_at = now
                session.last_used_at = now
                session.expires_at = min(now + self.settings.refresh_ttl, session.max_expires_at)
                session.last_ip = client.ip
                session.last_user_agent = client.user_agent
                db.add(
                    _event(
                        EventType.REFRESH,
                        now,
                        client,
                        user_id=session.user_id,
                        session_id=session.id,
                    )
                )
            # Rotation.REPLAY_SUCCESSOR changes nothing: the successor is recomputed below.
        if reused:
            raise RefreshTokenReusedError("refresh token reused; session ended")
        return self._issue(session, now)

    def _check_alive(self, session: SessionRow, user: UserRow | None, now: datetime) -> None:
        if session.revoked_at is not None:
            raise SessionEndedError("session revoked")
        if now >= session.expires_at or now >= session.max_expires_at:
            raise SessionEndedError("session expired")
        if user is None or user.disabled_at is not None:
            raise SessionEndedError("user disabled")

    def _end_reused_session(
        self,
        db: AsyncSession,
        session: SessionRow,
        presented_generation: int,
        client: ClientInfo,
        now: datetime,
    ) -> None:
        rotated_ago = (now - session.rotated_at).total_seconds() if session.rotated_at else None
        session.revoked_at = now
        session.revoked_reason = "reuse_detected"
        db.add(
            _event(
                EventType.REFRESH_REUSE_DETECTED,
                now,
                client,
                user_id=session.user_id,
                session_id=session.id,
                detail={
                    "rotated_seconds_ago": rotated_ago,
                    "generations_behind": session.generation - presented_generation,
                    "first_use": {"ip": session.last_ip, "user_agent": session.last_user_agent},
                    "reuse": {"ip": client.ip, "user_agent": client.user_agent},
                },
            )
        )

    async def logout(self, refresh_token: str, client: ClientInfo) -> bool:
        """End the session the token belongs to. Returns False when there was nothing to end."""
        try:
            presented = self.refresh_tokens.parse(refresh_token)
        except TokenError:
            return False
        now = self.clock()
        async with self.db.write() as db:
            session = await db.get(SessionRow, presented.session_id, with_for_update=True)
            if session is None or session.revoked_at is not None:
                return False
            if presented.generation > session.generation:
                return False
            session.revoked_at = now
            session.revoked_reason = "logout"
            db.add(
                _event(
                    EventType.LOGOUT, now, client, user_id=session.user_id, session_id=session.id
                )
            )
        return True

    # -- access tokens -----------------------------------------------------------------------

    def verify_access_token(self, token: str) -> AccessClaims:
        """Signature and claims only (no database): raises TokenError."""
        return self.access.verify(token)

    async def authenticate(self, token: str) -> User:
        """A valid access token whose session is still alive and whose user is enabled."""
        claims = self.access.verify(token)
        now = self.clock()
        async with self.db.read() as db:
            result = await db.execute(
                select(SessionRow, UserRow)
                .join(UserRow, UserRow.id == SessionRow.user_id)
                .where(SessionRow.id == claims.sid)
            )
            found = result.first()
        if found is None:
            raise SessionEndedError("unknown session")
        session, user = found
        if user.id != claims.sub:
            raise TokenError("session does not belong to the subject")
        self._check_alive(session, user, now)
        return _user(user)
