"""Sessions: signing in, refreshing with rotation, signing out, and what a signed-in user sees.

Every rule about a session itself (liveness, rotation, ending) is ``core.sessions.Session``'s;
this module joins it to the storage port, the rate limits and the token codecs.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from tokenward.app.claims import CustomClaims
from tokenward.app.context import Context
from tokenward.app.credentials import Verified, check_password, record_failure
from tokenward.app.factors import second_factor_methods
from tokenward.core.claims import ClaimsProblem, TokenGrant
from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.mfa import Authentication, MfaChallenge, MfaMethod, MfaMode
from tokenward.core.passwords import normalize_password
from tokenward.core.refresh import PresentedRefreshToken, RefreshResult, Rotation
from tokenward.core.roles import Grants
from tokenward.core.sessions import EndReason, RotationOutcome, Session
from tokenward.core.tokens import Claims, TokenTooLargeError
from tokenward.core.users import Account, User, account_key, normalize_email
from tokenward.exceptions import (
    AuthenticationError,
    EmailNotVerifiedError,
    InvalidEmailError,
    RefreshTokenReusedError,
    SessionEndedError,
    TokenError,
    UnavailableError,
)
from tokenward.infra import metrics
from tokenward.infra.ratelimit import Limit
from tokenward.storage.port import (
    Decide,
    EventInfo,
    FastPathDeclined,
    Rotated,
    RotationWriter,
    SessionInfo,
    UnitOfWork,
    retrying,
)

__all__ = ["Admit", "IssuedTokens", "MfaPending", "Principal", "Sessions"]

GRANTS_RACE_TRIES = 3
"""Sign-ins signed anew when the user's roles change between the token and the session."""


class _GrantsChanged(Exception):  # noqa: N818 - a signal to sign again, not an error
    pass


SESSION_CACHE_SIZE = 50_000
"""Sessions remembered per process between commits (SQLite); the oldest go first."""


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class MfaPending:
    """A sign-in whose password was right, waiting for a second factor (``methods``), or,
    under ``TOKENWARD_MFA=required``, for the user's first factor (``enrollment_required``).
    ``mfa_token`` goes to the client only; it is no access token and no refresh token."""

    mfa_token: str = field(repr=False)
    methods: tuple[MfaMethod, ...]
    expires_in: int
    enrollment_required: bool


Admit = Callable[["UnitOfWork", Account, ClientInfo, datetime, str], Awaitable[bool]]
"""Whether a sign-in still stands, decided in its session's transaction on the locked user
(the last argument: the id the session will have)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The user behind a verified access token, and the session it belongs to."""

    user: User
    session_id: str
    claims: Claims
    grants: Grants
    """The user's roles and permissions now (the token's may be older)."""


@dataclass(frozen=True, slots=True)
class _SessionState:
    """What authenticate needs of a session and its user, as read at ``marker``."""

    marker: int | None
    session: Session
    user: User
    user_disabled: bool
    grants: Grants


class Sessions:
    """Sign-in, rotation, sign-out, and the signed-in user's sessions and events."""

    def __init__(self, ctx: Context, claims: CustomClaims) -> None:
        self.ctx = ctx
        self.claims = claims
        self._sessions: dict[str, _SessionState] = {}

    async def login(
        self, email: str, password: str, client: ClientInfo
    ) -> IssuedTokens | MfaPending:
        """Check the password and start a session. Raises AuthenticationError, one for all.

        Raises RateLimitedError, before any verification, when the client IP or the account is
        over its limit; PasswordPolicyError (password_too_long) before hashing a huge input.
        The session starts only if the password hash and the user's state are still the ones
        verified: a login racing a password change (or a disabling) loses. A user with a second
        factor (or, under ``TOKENWARD_MFA=required``, without one yet) gets no session here: a
        pending sign-in (:class:`MfaPending`) that ``app.mfa`` completes.
        """
        password = normalize_password(password)
        account = account_key(email)
        ip = self.ctx.limits.client(client.ip)
        await self.ctx.limits.hit(Limit.LOGIN_IP, ip)
        self.ctx.policy.check_length_cap(password)
        try:
            email = normalize_email(email)
        except InvalidEmailError:
            email = ""
        row = None
        if email:
            async with self.ctx.store.read() as tx:
                row = await tx.account_by_email(email)
        verified = await check_password(self.ctx, account, ip, password, row)
        now = self.ctx.now()
        if row is None or verified is None:
            reason = "disabled" if row is not None and row.disabled_at else "bad_credentials"
            await record_failure(self.ctx, client, now, row.id if row else None, reason=reason)
            raise AuthenticationError("email or password is incorrect")
        if self.ctx.settings.email_verification == "required" and row.email_verified_at is None:
            # Said only to whoever knows the password: to anyone else, the one 401 above.
            await record_failure(self.ctx, client, now, row.id, reason="email_not_verified")
            raise EmailNotVerifiedError("the email address is not verified")
        await self.ctx.limits.hit(Limit.USER_ACTIONS, row.id)
        admit = partial(self._password_holds, verified)
        if self.ctx.settings.mfa is not MfaMode.OFF:
            pending = await retrying(partial(self._pend, row, admit, client, now))
            if pending is not None:
                return pending
        issued = await self.start(row, client, now, Authentication.password(now), admit)
        if issued is None:
            raise AuthenticationError("email or password is incorrect")
        return issued

    async def _pend(
        self, row: Account, admit: Admit, client: ClientInfo, now: datetime
    ) -> MfaPending | None:
        """A pending sign-in when the user must give a second factor (or enrol one); None when
        the password alone signs in. AuthenticationError if the user changed meanwhile."""
        async with self.ctx.store.read() as tx:
            methods = await second_factor_methods(tx, row.id, self.ctx.settings)
        if not methods and self.ctx.settings.mfa is not MfaMode.REQUIRED:
            return None  # the password alone signs in (no write transaction spent on it)
        async with self.ctx.store.write() as tx:
            user = await tx.account(row.id, lock=True)
            if user is None or user.disabled or not await admit(tx, user, client, now, ""):
                refused = True
            else:
                refused = False
                issued = MfaChallenge.issue(user.id, now, enrolling=not methods)
                await tx.add_mfa_challenge(issued.record)
                tx.add_event(
                    NewEvent(
                        EventType.MFA_REQUIRED,
                        now,
                        client,
                        user_id=user.id,
                        detail={"enrolling": not methods},
                    )
                )
        if refused:
            raise AuthenticationError("email or password is incorrect")
        return MfaPending(
            mfa_token=issued.token,
            methods=methods,
            expires_in=issued.record.expires_in,
            enrollment_required=not methods,
        )

    async def _password_holds(
        self,
        verified: Verified,
        tx: UnitOfWork,
        user: Account,
        client: ClientInfo,
        now: datetime,
        session_id: str,
    ) -> bool:
        """In the sign-in's transaction: the password verified is still the account's (and a
        legacy hash is upgraded); False, recorded, when it was changed while the login hashed,
        or when the password is to start a session (``session_id``) but the user confirmed a
        second factor since the login looked (that sign-in must ask for it)."""
        reason = None
        if user.password_hash != verified.password_hash:
            reason = "changed_during_login"
        elif session_id and await second_factor_methods(tx, user.id, self.ctx.settings):
            reason = "factor_enrolled_during_login"
        if reason is not None:
            tx.add_event(
                NewEvent(
                    EventType.LOGIN_FAILED,
                    now,
                    client,
                    user_id=user.id,
                    detail={"reason": reason},
                )
            )
            return False
        if verified.new_hash is not None:
            # A legacy bcrypt hash (or weaker argon2 parameters) upgraded on the way in,
            # written over exactly the hash that was verified (checked just above).
            await tx.set_password_hash(user.id, verified.new_hash)
        return True

    async def start(
        self,
        row: Account,
        client: ClientInfo,
        now: datetime,
        authentication: Authentication,
        admit: Admit,
    ) -> IssuedTokens | None:
        """Start a session for a user who authenticated (``authentication``): the token is
        signed first, then ``admit`` decides in the session's transaction whether the sign-in
        still stands (None if not; it may raise to roll the transaction back)."""
        session_id = str(uuid.uuid4())
        for _ in range(GRANTS_RACE_TRIES):
            async with self.ctx.store.read() as tx:
                grants = await tx.grants(row.id)
            # The hook and the token before the session: a failure leaves nothing behind.
            extra = await self.claims.for_token(row, session_id, grants, TokenGrant.LOGIN, client)
            access_token = await self._sign(
                row.id, session_id, now, grants, extra, client, TokenGrant.LOGIN, authentication
            )
            try:
                session = await retrying(
                    partial(
                        self._start_session,
                        row,
                        admit,
                        client,
                        now,
                        session_id,
                        grants,
                        authentication,
                    )
                )
            except _GrantsChanged:
                continue  # a role changed (and its sessions may have ended) meanwhile: again
            if session is None:
                return None
            return self._tokens(session, now, access_token)
        raise UnavailableError("database", "roles kept changing during a sign-in")

    async def _start_session(
        self,
        row: Account,
        admit: Admit,
        client: ClientInfo,
        now: datetime,
        session_id: str,
        grants: Grants,
        authentication: Authentication,
    ) -> Session | None:
        """The sign-in's one transaction; None when the user changed since they authenticated,
        _GrantsChanged when their roles did since the token was signed (a revocation that
        ended their sessions would otherwise miss this one)."""
        async with self.ctx.store.write() as tx:
            user = await tx.account(row.id, lock=True)
            if user is not None and await tx.grants(user.id) != grants:
                raise _GrantsChanged
            if user is None or user.disabled:
                # Deleted or disabled while this sign-in hashed or waited for its code.
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
            if not await admit(tx, user, client, now, session_id):
                return None
            session = Session.start(
                id=session_id,
                user_id=user.id,
                now=now,
                lifetimes=self.ctx.lifetimes,
                client=client,
                authentication=authentication,
            )
            await tx.add_session(session)
            tx.add_event(
                NewEvent(
                    EventType.LOGIN_SUCCEEDED,
                    now,
                    client,
                    user_id=user.id,
                    session_id=session.id,
                    detail={"amr": [m.value for m in authentication.methods]},
                )
            )
            cap = self.ctx.settings.max_sessions_per_user
            excess = await tx.live_session_count(user.id, now) - cap
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

    async def _sign(
        self,
        user_id: str,
        session_id: str,
        now: datetime,
        grants: Grants,
        extra: dict[str, Any] | None,
        client: ClientInfo,
        grant: TokenGrant,
        authentication: Authentication,
    ) -> str:
        """The access token; ClaimsUnavailableError (recorded) if it would be too long for
        verifiers to read (roles and the hook's claims are capped so that it is not)."""
        try:
            return self.ctx.access.issue(
                user_id=user_id,
                session_id=session_id,
                now=now.timestamp(),
                grants=grants,
                extra=extra,
                authentication=authentication,
            )
        except TokenTooLargeError:
            await self.claims.failed(ClaimsProblem.TOO_LARGE, user_id, session_id, grant, client)

    async def access_token(
        self,
        principal: Principal,
        authentication: Authentication,
        client: ClientInfo,
        grant: TokenGrant,
    ) -> str:
        """A new access token for the principal's session, saying ``authentication`` (a
        reauthentication): their roles now, and the claims hook's answer."""
        async with self.ctx.store.read() as tx:
            found = await tx.session_and_account(principal.session_id)
        if found is None:
            raise SessionEndedError("unknown session")
        _, account, grants = found
        extra = await self.claims.for_token(account, principal.session_id, grants, grant, client)
        return await self._sign(
            account.id,
            principal.session_id,
            self.ctx.now(),
            grants,
            extra,
            client,
            grant,
            authentication,
        )

    def _tokens(self, session: Session, now: datetime, access_token: str) -> IssuedTokens:
        """The answer: the access token and the session's current refresh token."""
        return IssuedTokens(
            access_token=access_token,
            expires_in=self.ctx.access.ttl_seconds,
            refresh_token=self.ctx.refresh_tokens.issue(session.id, session.generation),
            refresh_expires_in=max(0, int((session.expires_at - now).total_seconds())),
            session_id=session.id,
            user_id=session.user_id,
        )

    async def refresh(self, refresh_token: str, client: ClientInfo) -> IssuedTokens:
        """Rotate: the current token gets a successor; a recent predecessor gets the same one.

        Raises RefreshTokenReusedError (after ending the session) for an older predecessor,
        SessionEndedError for an ended session, TokenError for anything unknown or malformed.
        Each answer is counted by its result (``tokenward_refreshes_total``); a refusal before
        the token is looked at (a rate limit, the claims hook, the database away) is not.
        """
        try:
            issued, decision = await self._refresh(refresh_token, client)
        except RefreshTokenReusedError:
            metrics.current().refreshed(RefreshResult.REUSE_DETECTED)
            raise
        except SessionEndedError:
            metrics.current().refreshed(RefreshResult.EXPIRED)
            raise
        except TokenError:
            metrics.current().refreshed(RefreshResult.INVALID)
            raise
        metrics.current().refreshed(RefreshResult.of(decision))
        return issued

    async def _refresh(
        self, refresh_token: str, client: ClientInfo
    ) -> tuple[IssuedTokens, Rotation]:
        await self.ctx.limits.hit(Limit.REFRESH_IP, self.ctx.limits.client(client.ip))
        presented = self.ctx.refresh_tokens.parse(refresh_token)
        await self.ctx.limits.hit(Limit.REFRESH_SESSION, presented.session_id)
        now = self.ctx.now()
        extra = await self._hook_claims(presented, now, client) if self.claims.enabled else None

        def decide(loaded: tuple[Session, bool] | None) -> RotationOutcome:
            return self._rotation(loaded, presented, client, now)

        lean: RotationWriter | None = self.ctx.db.rotations()
        if lean is not None:
            try:
                rotated = await retrying(lambda: lean.rotate(presented.session_id, decide))
            except FastPathDeclined:
                pass  # a busy SQLite writer, or a reuse to end: the unit of work below
            else:
                return await self._issued(rotated, now, extra, client), rotated.outcome.decision
        rotated = await retrying(lambda: self._rotate_in(presented.session_id, decide))
        return await self._issued(rotated, now, extra, client), rotated.outcome.decision

    async def _hook_claims(
        self, presented: PresentedRefreshToken, now: datetime, client: ClientInfo
    ) -> dict[str, Any] | None:
        """The claims hook's answer for a refresh, asked before the rotation is written."""
        async with self.ctx.store.read() as tx:
            found = await tx.session_and_account(presented.session_id)
        if found is None:
            raise TokenError("unknown session")
        session, account, grants = found
        session.check_alive(now, user_disabled=account.disabled)
        # No token can be too long to answer once the rotation is written: roles and the
        # hook's claims are capped so that they fit together (core.roles.MAX_GRANTS_BYTES).
        return await self.claims.for_token(account, session.id, grants, TokenGrant.REFRESH, client)

    async def _rotate_in(self, session_id: str, decide: Decide) -> Rotated:
        """The rotation's one transaction through the unit of work (and what lean declines)."""
        async with self.ctx.store.write() as tx:
            outcome = decide(await tx.load_for_rotation(session_id))
            await tx.save_rotation(outcome)
            grants = Grants() if outcome.reused else await tx.grants(outcome.session.user_id)
        return Rotated(outcome, grants)

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
            reuse_interval=self.ctx.settings.refresh_reuse_interval,
            idle=self.ctx.settings.refresh_ttl,
            user_disabled=user_disabled,
        )

    async def _issued(
        self, rotated: Rotated, now: datetime, extra: dict[str, Any] | None, client: ClientInfo
    ) -> IssuedTokens:
        """The successor's tokens, after the commit; a detected reuse is raised only now."""
        if rotated.outcome.reused:
            raise RefreshTokenReusedError("refresh token reused; session ended")
        session = rotated.outcome.session
        access_token = await self._sign(
            session.user_id,
            session.id,
            now,
            rotated.grants,
            extra,
            client,
            TokenGrant.REFRESH,
            session.authenticated,
        )
        return self._tokens(session, now, access_token)

    async def logout(self, refresh_token: str, client: ClientInfo) -> bool:
        """End the session the token belongs to. Returns False when there was nothing to end."""
        try:
            presented = self.ctx.refresh_tokens.parse(refresh_token)
        except TokenError:
            return False
        now = self.ctx.now()

        async def end() -> bool:
            async with self.ctx.store.write() as tx:
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
        now = self.ctx.now()
        claims = self.ctx.access.verify(token, now=now.timestamp())
        seen = await self._session_state(claims.sid)
        if seen is None:
            raise SessionEndedError("unknown session")
        if seen.user.id != claims.sub:
            raise TokenError("session does not belong to the subject")
        seen.session.check_alive(now, user_disabled=seen.user_disabled)
        return Principal(
            user=seen.user, session_id=seen.session.id, claims=claims, grants=seen.grants
        )

    async def _session_state(self, session_id: str) -> _SessionState | None:
        """The session and its user, from memory while nothing was committed since (SQLite)."""
        marker = self.ctx.db.change_marker()  # read first: a commit after it forces a reread
        if marker is not None:
            cached = self._sessions.get(session_id)
            if cached is not None and cached.marker == marker:
                return cached
        async with self.ctx.store.read() as tx:
            found = await tx.session_and_account(session_id)
        if found is None:
            return None
        session, account, grants = found
        state = _SessionState(
            marker=marker,
            session=session,
            user=account.user,
            user_disabled=account.disabled,
            grants=grants,
        )
        if marker is not None:
            if len(self._sessions) >= SESSION_CACHE_SIZE:
                self._sessions.pop(next(iter(self._sessions)))  # the oldest entry
            self._sessions[session_id] = state
        return state

    # -- the signed-in user's own sessions, password and events ------------------------------

    async def list_sessions(self, principal: Principal) -> list[SessionInfo]:
        """The caller's live sessions, newest first, the caller's own marked ``current``."""
        async with self.ctx.store.read() as tx:
            return await tx.live_sessions(
                principal.user.id, self.ctx.now(), current=principal.session_id
            )

    async def revoke_session(
        self, principal: Principal, session_id: str, client: ClientInfo
    ) -> bool:
        """End one of the caller's sessions; False if the caller has no such live session."""
        await self.ctx.limits.hit(Limit.USER_ACTIONS, principal.user.id)
        now = self.ctx.now()

        async def end() -> list[str]:
            async with self.ctx.store.write() as tx:
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
        await self.ctx.limits.hit(Limit.USER_ACTIONS, principal.user.id)
        now = self.ctx.now()
        keep = principal.session_id if keep_current else None

        async def end() -> list[str]:
            async with self.ctx.store.write() as tx:
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

    async def recent_events(self, user_id: str, limit: int = 50) -> list[EventInfo]:
        """The user's own security events, newest first."""
        async with self.ctx.store.read() as tx:
            return await tx.events(user_id=user_id, limit=limit)
