"""The application layer: register, login, refresh with rotation, logout, authenticate.

It joins the domain (passwords, tokens, rotation rule) to the store, one transaction per
operation, and knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.keys import Keyring, SigningKey
from tokenward.core.passwords import (
    ImportedHashError,
    PasswordHasher,
    PasswordPolicy,
    check_imported_hash,
    normalize_password,
)
from tokenward.core.refresh import (
    PresentedRefreshToken,
    RefreshTokenCodec,
)
from tokenward.core.sessions import EndReason, RotationOutcome, Session, SessionLifetimes
from tokenward.core.tokens import AccessTokenCodec, Claims
from tokenward.core.users import Account, User, account_key, normalize_email
from tokenward.exceptions import (
    AuthenticationError,
    EmailTakenError,
    InvalidEmailError,
    RefreshTokenReusedError,
    SessionEndedError,
    TokenError,
    UnavailableError,
)
from tokenward.infra.config import Settings
from tokenward.infra.masterkey import MasterKey
from tokenward.infra.ratelimit import Limit, RateLimiter
from tokenward.storage import Database
from tokenward.storage.keys import KeyStore
from tokenward.storage.port import EventInfo, SessionInfo, retrying
from tokenward.storage.sql import SqlStore
from tokenward.storage.sqlite_fast import SqliteWriter, WriterBusy

__all__ = ["AuthService", "ClientInfo", "ImportReport", "IssuedTokens", "Principal"]

Clock = Callable[[], datetime]
T = TypeVar("T")
READINESS_TIMEOUT = 3.0
HASH_CONCURRENCY = max(1, (os.cpu_count() or 1) - 1)
"""Password hashes computed at once per process: one core stays free for everything else."""
FAST_WRITE_PAUSES = (0.0005, 0.001, 0.002, 0.004, 0.008)
"""Seconds between tries of the plain-sqlite3 rotation while another writer holds the lock."""
SESSION_CACHE_SIZE = 50_000
"""Sessions remembered per process between commits (SQLite); the oldest go first."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Principal:
    """The user behind a verified access token, and the session it belongs to."""

    user: User
    session_id: str
    claims: Claims


@dataclass
class ImportReport:
    imported: int = 0
    skipped_existing: int = 0
    rejected: list[int] = field(default_factory=list)
    """1-based numbers of the records that were not valid."""
    reasons: dict[int, str] = field(default_factory=dict)
    """Why a rejected record's hash was refused, by record number (never the hash itself)."""


@dataclass(frozen=True, slots=True)
class _Verified:
    """A password check that passed: the hash it passed against, and its upgrade if due."""

    password_hash: str
    new_hash: str | None


@dataclass(frozen=True, slots=True)
class _SessionState:
    """What authenticate needs of a session and its user, as read at ``marker``."""

    marker: int | None
    session: Session
    user: User
    user_disabled: bool


class AuthService:
    """Everything tokenward does, behind typed methods. One instance per process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        keys: KeyStore,
        keyring: Keyring,
        refresh_secret: bytes,
        hasher: PasswordHasher | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = SqlStore(db)
        self.keys = keys
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        self.policy = PasswordPolicy(min_length=settings.password_min_length)
        self.access = AccessTokenCodec(
            keyring,
            issuer=settings.issuer,
            audience=settings.audience,
            ttl=settings.access_ttl,
        )
        self.refresh_tokens = RefreshTokenCodec(refresh_secret)
        self.lifetimes = SessionLifetimes(
            idle=settings.refresh_ttl, absolute=settings.session_max_age
        )
        self.limits = RateLimiter(settings)
        self._sessions: dict[str, _SessionState] = {}
        self._hash_slots = asyncio.Semaphore(HASH_CONCURRENCY)

    async def _in_hash_slot(self, work: Callable[..., T], *args: Any) -> T:
        """Run a password hash (argon2id: ~0.25 CPU-s, 64 MiB) in a thread, a few at a time.

        The soak showed a login flood with one hash per request starving the event loop: every
        other request waited seconds for CPU. Queued logins wait instead; the rest stay fast.
        """
        async with self._hash_slots:
            return await asyncio.to_thread(work, *args)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        hasher: PasswordHasher | None = None,
    ) -> AuthService:
        """Load (or make) the keys, connect, and bring the schema up to date."""
        db = Database(settings.sqlalchemy_url)
        try:
            await db.migrate()
            master = MasterKey.load(settings)
            keys = KeyStore(db, master, settings)
            keyring = await keys.ensure_signer(clock())
        except BaseException:
            await db.dispose()  # no connection outlives a failed start
            raise
        return cls(
            settings,
            db,
            keys=keys,
            keyring=keyring,
            refresh_secret=master.refresh_mac_key(),
            hasher=hasher,
            clock=clock,
        )

    async def readiness(self) -> dict[str, str]:
        """``{"database": "ok"|"unavailable", ["redis": ...]}``, each check bounded in time."""
        checks = {"database": self.db.ping()}
        if self.settings.redis_url:
            checks["redis"] = self.limits.ping()
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check, READINESS_TIMEOUT)
                results[name] = "ok"
            except (UnavailableError, TimeoutError):
                results[name] = "unavailable"
        return results

    async def close(self) -> None:
        await self.limits.close()
        await self.db.dispose()

    # -- keys --------------------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        """The key that signs access tokens now."""
        return self.access.keyring.signer(self.clock())

    def published_keys(self) -> list[dict[str, str]]:
        """The public JWKs verifiers need now or soon (RFC 7517 key set members)."""
        return [
            key.public_jwk
            for key in self.access.keyring.published(self.clock())
            if key.public_jwk is not None
        ]

    async def reload_keys(self) -> None:
        """Pick up keys rotated or retired by another instance or the CLI."""
        now = self.clock()
        await self.keys.rotate_if_due(now)
        self.access.keyring = await self.keys.ensure_signer(now)

    # -- users -------------------------------------------------------------------------------

    async def register(self, email: str, password: str, client: ClientInfo | None = None) -> User:
        """Create a user. Raises InvalidEmailError, PasswordPolicyError or EmailTakenError.

        ``client`` is the HTTP caller (rate-limited per IP); None means an operator.
        """
        if client is not None:
            await self.limits.hit(Limit.REGISTER_IP, self.limits.client(client.ip))
        email = normalize_email(email)
        password = normalize_password(password)
        self.policy.check(password, email=email)
        async with self.store.read() as tx:
            if await tx.account_by_email(email) is not None:
                raise EmailTakenError("an account with this email already exists")
        password_hash = await self._in_hash_slot(self.hasher.hash, password)
        now = self.clock()
        account = Account(
            id=str(uuid.uuid4()),
            email=email,
            password_hash=password_hash,
            created_at=now,
            password_changed_at=now,
        )
        kind = EventType.USER_REGISTERED if client else EventType.USER_CREATED
        event = NewEvent(kind, now, client or ClientInfo(), user_id=account.id)

        async def insert() -> None:
            async with self.store.write() as tx:
                await tx.add_account(account)
                tx.add_event(event)

        await retrying(insert)
        return account.user

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
            try:
                check_imported_hash(password_hash)
            except ImportedHashError as error:
                report.rejected.append(number)
                report.reasons[number] = str(error)
                continue
            async with self.store.write() as tx:
                if await tx.account_by_email(email) is not None:
                    report.skipped_existing += 1
                    continue
                account = Account(
                    id=str(uuid.uuid4()),
                    email=email,
                    password_hash=password_hash,
                    created_at=now,
                    password_changed_at=now,
                )
                await tx.add_account(account)
                tx.add_event(NewEvent(EventType.USER_IMPORTED, now, user_id=account.id))
            report.imported += 1
        return report

    # -- sessions ----------------------------------------------------------------------------

    async def login(self, email: str, password: str, client: ClientInfo) -> IssuedTokens:
        """Check the password and start a session. Raises AuthenticationError, one for all.

        Raises RateLimitedError, before any verification, when the client IP or the account is
        over its limit; PasswordPolicyError (password_too_long) before hashing a huge input.
        The session starts only if the password hash and the user's state are still the ones
        verified: a login racing a password change (or a disabling) loses.
        """
        password = normalize_password(password)
        account = account_key(email)
        ip = self.limits.client(client.ip)
        await self.limits.hit(Limit.LOGIN_IP, ip)
        self.policy.check_length_cap(password)
        try:
            email = normalize_email(email)
        except InvalidEmailError:
            email = ""
        row = None
        if email:
            async with self.store.read() as tx:
                row = await tx.account_by_email(email)
        verified = await self._check_password(account, ip, password, row)
        now = self.clock()
        if row is None or verified is None:
            reason = "disabled" if row is not None and row.disabled_at else "bad_credentials"
            await self._record_failure(client, now, row.id if row else None, reason=reason)
            raise AuthenticationError("email or password is incorrect")
        await self.limits.hit(Limit.USER_ACTIONS, row.id)
        session = await retrying(lambda: self._start_session(row, verified, client, now))
        if session is None:
            raise AuthenticationError("email or password is incorrect")
        return self._issue(session, now)

    async def _check_password(
        self, account: str, ip: str, password: str, row: Account | None
    ) -> _Verified | None:
        """Verify ``password`` under the account's failure limits; None unless it may sign in.

        The failure is counted *before* the hash runs and given back on success, so a burst
        of concurrent guesses cannot all pass a check that none of them was counted in yet.
        An unknown account still costs one verification (no timing oracle).
        """
        await self.limits.reserve(
            (Limit.LOGIN_FAILURES_ACCOUNT_IP, (account, ip)),
            (Limit.LOGIN_FAILURES_ACCOUNT, (account,)),
        )
        password_hash = row.password_hash if row else None
        ok, new_hash = await self._in_hash_slot(self.hasher.verify, password, password_hash)
        if row is None or password_hash is None or not ok or row.disabled_at is not None:
            return None
        await self.limits.clear(Limit.LOGIN_FAILURES_ACCOUNT_IP, account, ip)
        await self.limits.refund(Limit.LOGIN_FAILURES_ACCOUNT, account)
        return _Verified(password_hash=password_hash, new_hash=new_hash)

    async def _record_failure(
        self,
        client: ClientInfo,
        now: datetime,
        user_id: str | None,
        *,
        reason: str,
        session_id: str | None = None,
    ) -> None:
        event = NewEvent(
            EventType.LOGIN_FAILED,
            now,
            client,
            user_id=user_id,
            session_id=session_id,
            detail={"reason": reason},
        )

        async def write() -> None:
            async with self.store.write() as tx:
                tx.add_event(event)

        await retrying(write)

    async def _start_session(
        self, row: Account, verified: _Verified, client: ClientInfo, now: datetime
    ) -> Session | None:
        """The login's one transaction; None when the user changed since the password check."""
        async with self.store.write() as tx:
            user = await tx.account(row.id, lock=True)
            if user is None or user.password_hash != verified.password_hash or user.disabled:
                # The password was changed (or the user disabled) while this login hashed:
                # what was verified is not the account's password any more.
                tx.add_event(
                    NewEvent(
                        EventType.LOGIN_FAILED,
                        now,
                        client,
                        user_id=row.id,
                        detail={"reason": "changed_during_login"},
                    )
                )
                return None
            if verified.new_hash is not None:
                # A legacy bcrypt hash (or weaker argon2 parameters) upgraded on the way in,
                # written over exactly the hash that was verified (checked just above).
                await tx.set_password_hash(user.id, verified.new_hash)
            session = Session.start(
                id=str(uuid.uuid4()),
                user_id=user.id,
                now=now,
                lifetimes=self.lifetimes,
                client=client,
            )
            await tx.add_session(session)
            tx.add_event(
                NewEvent(
                    EventType.LOGIN_SUCCEEDED, now, client, user_id=user.id, session_id=session.id
                )
            )
            excess = await tx.live_session_count(user.id, now) - self.settings.max_sessions_per_user
            if excess > 0:
                ended = await tx.end_sessions(
                    user.id, now, EndReason.SESSION_LIMIT, keep=session.id, oldest=excess
                )
                for sid in ended:
                    tx.add_event(
                        NewEvent(
                            EventType.SESSION_REVOKED,
                            now,
                            client,
                            user_id=user.id,
                            session_id=sid,
                            detail={"by": "session_limit"},
                        )
                    )
        return session

    def _issue(self, session: Session, now: datetime) -> IssuedTokens:
        return self._issue_tokens(
            session.id, session.user_id, session.generation, session.expires_at, now
        )

    def _issue_tokens(
        self, session_id: str, user_id: str, generation: int, expires_at: datetime, now: datetime
    ) -> IssuedTokens:
        return IssuedTokens(
            access_token=self.access.issue(
                user_id=user_id, session_id=session_id, now=now.timestamp()
            ),
            expires_in=self.access.ttl_seconds,
            refresh_token=self.refresh_tokens.issue(session_id, generation),
            refresh_expires_in=max(0, int((expires_at - now).total_seconds())),
            session_id=session_id,
            user_id=user_id,
        )

    async def refresh(self, refresh_token: str, client: ClientInfo) -> IssuedTokens:
        """Rotate: the current token gets a successor; a recent predecessor gets the same one.

        Raises RefreshTokenReusedError (after ending the session) for an older predecessor,
        SessionEndedError for an ended session, TokenError for anything unknown or malformed.
        """
        await self.limits.hit(Limit.REFRESH_IP, self.limits.client(client.ip))
        presented = self.refresh_tokens.parse(refresh_token)
        await self.limits.hit(Limit.REFRESH_SESSION, presented.session_id)
        now = self.clock()
        writer = self.db.fast_writer()
        if writer is not None:
            # Another connection (a worker process, the CLI, an ORM transaction here) holds
            # the write lock only briefly: try again a few times after a millisecond or two,
            # far sooner than SQLite's own busy handler would wake up, then wait below.
            for pause in FAST_WRITE_PAUSES:
                with contextlib.suppress(WriterBusy):
                    return self._refresh_on(writer, presented, client, now)
                await asyncio.sleep(pause)
        return await retrying(lambda: self._refresh_in(presented, client, now))

    async def _refresh_in(
        self, presented: PresentedRefreshToken, client: ClientInfo, now: datetime
    ) -> IssuedTokens:
        """The rotation's one transaction through SQLAlchemy (PostgreSQL, or SQLite waiting)."""
        async with self.store.write() as tx:
            loaded = await tx.load_for_rotation(presented.session_id)
            outcome = self._rotation(loaded, presented, client, now)
            await tx.save_rotation(outcome)
        return self._issued(outcome, now)

    def _refresh_on(
        self,
        writer: SqliteWriter,
        presented: PresentedRefreshToken,
        client: ClientInfo,
        now: datetime,
    ) -> IssuedTokens:
        """The same transaction in plain sqlite3 (see storage.sqlite_fast): the same rule."""
        with writer.transaction() as tx:
            outcome = self._rotation(
                tx.load_for_rotation(presented.session_id), presented, client, now
            )
            tx.save_rotation(outcome)
        return self._issued(outcome, now)

    def _rotation(
        self,
        loaded: tuple[Session, bool] | None,
        presented: PresentedRefreshToken,
        client: ClientInfo,
        now: datetime,
    ) -> RotationOutcome:
        """Session.rotate with this server's settings; TokenError for an unknown session."""
        if loaded is None:
            raise TokenError("unknown session")
        session, user_disabled = loaded
        return session.rotate(
            presented.generation,
            now,
            client=client,
            reuse_interval=self.settings.refresh_reuse_interval,
            idle=self.settings.refresh_ttl,
            user_disabled=user_disabled,
        )

    def _issued(self, outcome: RotationOutcome, now: datetime) -> IssuedTokens:
        """The successor's tokens, after the commit; a detected reuse is raised only now."""
        if outcome.reused:
            raise RefreshTokenReusedError("refresh token reused; session ended")
        session = outcome.session
        return self._issue_tokens(
            session.id, session.user_id, session.generation, session.expires_at, now
        )

    async def logout(self, refresh_token: str, client: ClientInfo) -> bool:
        """End the session the token belongs to. Returns False when there was nothing to end."""
        try:
            presented = self.refresh_tokens.parse(refresh_token)
        except TokenError:
            return False
        now = self.clock()

        async def end() -> bool:
            async with self.store.write() as tx:
                session = await tx.session(presented.session_id, lock=True)
                if session is None or presented.generation > session.generation:
                    return False
                user_id = session.user_id
                ended = await tx.end_sessions(user_id, now, EndReason.LOGOUT, only=session.id)
                if ended:
                    tx.add_event(
                        NewEvent(
                            EventType.LOGOUT, now, client, user_id=user_id, session_id=session.id
                        )
                    )
            return bool(ended)

        return await retrying(end)

    # -- access tokens -----------------------------------------------------------------------

    async def authenticate(self, token: str) -> Principal:
        """A valid access token whose session is still alive and whose user is enabled."""
        now = self.clock()
        claims = self.access.verify(token, now=now.timestamp())
        seen = await self._session_state(claims.sid)
        if seen is None:
            raise SessionEndedError("unknown session")
        if seen.user.id != claims.sub:
            raise TokenError("session does not belong to the subject")
        seen.session.check_alive(now, user_disabled=seen.user_disabled)
        return Principal(user=seen.user, session_id=seen.session.id, claims=claims)

    async def _session_state(self, session_id: str) -> _SessionState | None:
        """The session and its user, from memory while nothing was committed since (SQLite)."""
        marker = self.db.change_marker()  # read first: a commit after it forces a reread
        if marker is not None:
            cached = self._sessions.get(session_id)
            if cached is not None and cached.marker == marker:
                return cached
        async with self.store.read() as tx:
            found = await tx.session_and_account(session_id)
        if found is None:
            return None
        session, account = found
        state = _SessionState(
            marker=marker, session=session, user=account.user, user_disabled=account.disabled
        )
        if marker is not None:
            if len(self._sessions) >= SESSION_CACHE_SIZE:
                self._sessions.pop(next(iter(self._sessions)))  # the oldest entry
            self._sessions[session_id] = state
        return state

    # -- the signed-in user's own sessions, password and events ------------------------------

    async def list_sessions(self, principal: Principal) -> list[SessionInfo]:
        """The caller's live sessions, newest first, the caller's own marked ``current``."""
        async with self.store.read() as tx:
            return await tx.live_sessions(
                principal.user.id, self.clock(), current=principal.session_id
            )

    async def revoke_session(
        self, principal: Principal, session_id: str, client: ClientInfo
    ) -> bool:
        """End one of the caller's sessions; False if the caller has no such live session."""
        await self.limits.hit(Limit.USER_ACTIONS, principal.user.id)
        now = self.clock()

        async def end() -> list[str]:
            async with self.store.write() as tx:
                ended = await tx.end_sessions(
                    principal.user.id, now, EndReason.REVOKED, only=session_id
                )
                if ended:
                    tx.add_event(
                        NewEvent(
                            EventType.SESSION_REVOKED,
                            now,
                            client,
                            user_id=principal.user.id,
                            session_id=session_id,
                            detail={"by": "user"},
                        )
                    )
            return ended

        return bool(await retrying(end))

    async def logout_all(
        self, principal: Principal, client: ClientInfo, *, keep_current: bool = False
    ) -> int:
        """End every session of the caller (or all but the current one); return how many."""
        await self.limits.hit(Limit.USER_ACTIONS, principal.user.id)
        now = self.clock()
        keep = principal.session_id if keep_current else None

        async def end() -> list[str]:
            async with self.store.write() as tx:
                ended = await tx.end_sessions(
                    principal.user.id, now, EndReason.LOGOUT_ALL, keep=keep
                )
                tx.add_event(
                    NewEvent(
                        EventType.LOGOUT_ALL,
                        now,
                        client,
                        user_id=principal.user.id,
                        session_id=principal.session_id,
                        detail={"ended": len(ended), "kept_current": keep_current},
                    )
                )
            return ended

        return len(await retrying(end))

    async def change_password(
        self, principal: Principal, current: str, new: str, client: ClientInfo
    ) -> None:
        """Check the current password, apply the policy, rehash, and end every other session.

        The account's login failure limits apply (a stolen access token cannot brute-force
        the password here, nor get past a lockout), and so does a limit on changes of its own
        (each costs two hashes). The new hash is written only over the hash that was verified.
        """
        new = normalize_password(new)
        current = normalize_password(current)
        account, ip = account_key(principal.user.email), self.limits.client(client.ip)
        self.policy.check_length_cap(current)
        self.policy.check(new, email=principal.user.email)
        await self.limits.hit(Limit.PASSWORD_CHANGE_ACCOUNT, principal.user.id)
        async with self.store.read() as tx:
            row = await tx.account(principal.user.id)
        verified = await self._check_password(account, ip, current, row)
        now = self.clock()
        if verified is None:
            await self._record_failure(
                client,
                now,
                principal.user.id,
                reason="bad_current_password",
                session_id=principal.session_id,
            )
            raise AuthenticationError("the current password is incorrect")
        password_hash = await self._in_hash_slot(self.hasher.hash, new)

        async def replace() -> bool:
            async with self.store.write() as tx:
                user = await tx.account(principal.user.id, lock=True)
                if user is None or user.password_hash != verified.password_hash:
                    return False  # changed by another request since the check: not ours to undo
                await tx.set_password_hash(user.id, password_hash, changed_at=now)
                ended = await tx.end_sessions(
                    user.id, now, EndReason.PASSWORD_CHANGED, keep=principal.session_id
                )
                tx.add_event(
                    NewEvent(
                        EventType.PASSWORD_CHANGED,
                        now,
                        client,
                        user_id=user.id,
                        session_id=principal.session_id,
                        detail={"sessions_ended": len(ended)},
                    )
                )
            return True

        if not await retrying(replace):
            raise AuthenticationError("the current password is incorrect")

    async def recent_events(self, user_id: str, limit: int = 50) -> list[EventInfo]:
        """The user's own security events, newest first."""
        async with self.store.read() as tx:
            return await tx.events(user_id=user_id, limit=limit)
