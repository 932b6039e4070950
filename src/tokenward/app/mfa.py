"""A second factor: TOTP enrolment and removal, recovery codes, completing a pending sign-in,
and reauthenticating (a step-up) within a session.

The rules are core's (``core.totp``: codes and steps; ``core.mfa``: the pending sign-in and
what a session's authentication says); this module joins them to storage, the rate limits,
the outbox and the sessions. TOTP secrets are sealed under the server secret before they are
stored; recovery codes and ``mfa_token``\\ s are kept as hashes only. A code is accepted once:
the factor's last accepted step is written conditionally in the sign-in's own transaction.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

import segno
from cryptography.fernet import Fernet, InvalidToken

from tokenward.app.context import Context
from tokenward.app.credentials import check_current_password
from tokenward.app.factors import second_factor_methods
from tokenward.app.outbox import Outbox
from tokenward.app.sessions import Admit, IssuedTokens, Principal, Sessions
from tokenward.core.claims import TokenGrant
from tokenward.core.events import Actor, ClientInfo, EventType, NewEvent
from tokenward.core.mfa import (
    ENROLMENT_TTL,
    MAX_FACTORS,
    Acr,
    Authentication,
    Factor,
    FactorType,
    MfaChallenge,
    MfaMethod,
    MfaMode,
    hash_challenge_token,
    parse_challenge_token,
)
from tokenward.core.totp import (
    RecoveryCode,
    TotpSecret,
    hash_recovery_code,
    matching_step,
    new_recovery_codes,
)
from tokenward.core.users import Account
from tokenward.exceptions import (
    FactorLimitError,
    InvalidMfaCodeError,
    MfaFailedError,
    SessionEndedError,
    StepUpRequiredError,
    UnknownFactorError,
    UnknownUserError,
)
from tokenward.infra.mail import MailTemplate
from tokenward.infra.ratelimit import Limit
from tokenward.storage.port import UnitOfWork, retrying

__all__ = [
    "Enrolment",
    "FactorInfo",
    "Factors",
    "Reauthenticated",
    "SecondFactors",
]

_log = logging.getLogger("tokenward")

MAX_CODE_LENGTH = 64
"""Longer input is no code of ours (a recovery code is 29 characters with its dashes)."""


@dataclass(frozen=True, slots=True)
class FactorInfo:
    """A confirmed factor as its user sees it: never its secret."""

    id: str
    type: FactorType
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class Factors:
    factors: list[FactorInfo]
    recovery_codes_remaining: int


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new TOTP factor waiting for its confirming code: what the user's app needs."""

    factor_id: str
    secret: str = field(repr=False)
    otpauth_uri: str = field(repr=False)
    qr_svg: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A confirmed factor; the recovery codes when it is the user's first (shown this once);
    the sign-in's tokens when it was enrolled to complete one (``TOKENWARD_MFA=required``)."""

    factor: FactorInfo
    recovery_codes: list[str] | None = field(repr=False)
    tokens: IssuedTokens | None = None


@dataclass(frozen=True, slots=True)
class Reauthenticated:
    access_token: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True, slots=True)
class _Proof:
    """A code that matched, before it is spent: a TOTP step of a factor, or a recovery code."""

    method: MfaMethod
    factor_id: str | None = None
    step: int | None = None
    code_hash: str | None = None


_Activate = Callable[[UnitOfWork, Account, ClientInfo, datetime, str | None], Awaitable[bool]]
"""Confirming a factor, in a transaction: whether it was the user's first."""


class Refused(Exception):  # noqa: N818 - rolls a sign-in's transaction back; not an error
    """A second factor refused inside the transaction that relied on it (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _info(factor: Factor) -> FactorInfo:
    return FactorInfo(factor.id, factor.type, factor.created_at, factor.last_used_at)


def qr_svg(text: str) -> str:
    """``text`` as a QR code, an SVG document (error correction M, as authenticator apps read)."""
    buffer = io.BytesIO()
    segno.make(text, error="m").save(
        buffer, kind="svg", scale=4, border=4, xmldecl=False, svgclass=None, lineclass=None
    )
    return buffer.getvalue().decode()


class SecondFactors:
    """Enrol, list and remove factors; complete pending sign-ins; reauthenticate."""

    def __init__(self, ctx: Context, sessions: Sessions, outbox: Outbox) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.outbox = outbox
        self._sealer = Fernet(ctx.mfa_key)

    # -- what a request must show --------------------------------------------------------------

    def require_recent(self, principal: Principal, *, aal2: bool) -> None:
        """StepUpRequiredError (RFC 9470) unless the access token's ``auth_time`` is within
        ``TOKENWARD_REAUTH_MAX_AGE`` and, when ``aal2``, its ``acr`` is aal2."""
        claims = principal.claims
        max_age = int(self.ctx.settings.reauth_max_age.total_seconds())
        now = self.ctx.now().timestamp()
        too_old = claims.auth_time is None or now - claims.auth_time > max_age
        too_weak = aal2 and claims.acr != Acr.AAL2.value
        if too_old or too_weak:
            raise StepUpRequiredError(
                acr_values=Acr.AAL2.value if too_weak else None,
                max_age=max_age if too_old else None,
            )

    async def held(self, user_id: str) -> tuple[MfaMethod, ...]:
        async with self.ctx.store.read() as tx:
            return await second_factor_methods(tx, user_id, self.ctx.settings)

    async def _confirmed(self, user_id: str) -> list[Factor]:
        async with self.ctx.store.read() as tx:
            return [f for f in await tx.factors(user_id) if f.confirmed]

    # -- enrolment -----------------------------------------------------------------------------

    async def enroll(
        self, client: ClientInfo, *, principal: Principal | None = None, mfa_token: str = ""
    ) -> Enrolment:
        """A new TOTP factor, unconfirmed: for a signed-in user (recently authenticated; at
        aal2 when they hold a factor already), or for a pending sign-in that must enrol."""
        if principal is not None:
            account = await self._account(principal.user.id)
            self.require_recent(principal, aal2=bool(await self.held(account.id)))
        else:
            _, account = await self.pending(mfa_token, enrolling=True)
            if await self.held(account.id):
                # Enrolled meanwhile: this sign-in must give the factor, not add one.
                raise MfaFailedError("the user has a factor now")
        factors = await self._confirmed(account.id)
        if len(factors) >= MAX_FACTORS:
            raise FactorLimitError("too many factors")
        now = self.ctx.now()
        secret = TotpSecret.new()
        factor_id = str(uuid.uuid4())
        factor = Factor(
            id=factor_id,
            user_id=account.id,
            type=FactorType.TOTP,
            secret=self._seal(factor_id, account.id, secret),
            created_at=now,
        )

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                await tx.add_factor(factor)

        await retrying(write)
        uri = secret.uri(account=account.email, issuer=self.ctx.settings.totp_issuer)
        return Enrolment(
            factor_id=factor.id,
            secret=secret.base32,
            otpauth_uri=uri,
            qr_svg=qr_svg(uri),
            expires_in=int(ENROLMENT_TTL.total_seconds()),
        )

    async def confirm(
        self,
        factor_id: str,
        code: str,
        client: ClientInfo,
        *,
        principal: Principal | None = None,
        mfa_token: str = "",
    ) -> Confirmed:
        """Activate a factor with its current code (whose step then counts as used). The
        user's first factor comes with recovery codes. For a pending sign-in that had to
        enrol, the sign-in completes too (the session is at aal2)."""
        now = self.ctx.now()
        challenge = None
        if principal is not None:
            account = await self._account(principal.user.id)
        else:
            challenge, account = await self.pending(mfa_token, enrolling=True)
        async with self.ctx.store.read() as tx:
            factor = next((f for f in await tx.factors(account.id) if f.id == factor_id), None)
        if factor is None or not factor.confirmable(now):
            raise UnknownFactorError("no factor waiting for confirmation with this id")
        if challenge is not None:
            await self.attempt(challenge, now)
        secret = self._secret(factor)
        step = None if secret is None else matching_step(secret, code, now.timestamp())
        if step is None:
            if challenge is not None:
                await self.failed(account.id, client, now, "bad_code")  # its attempt counted
            raise InvalidMfaCodeError("the code does not match")
        codes = new_recovery_codes()
        # Signed in: with a factor already, only an aal2 session may add one (checked again
        # in the transaction: a first factor confirmed meanwhile counts). Pending: only while
        # the user still has none (else that sign-in must give it).
        aal2 = principal is not None and principal.claims.acr == Acr.AAL2.value
        confirm: _Activate = partial(
            self._activate, factor, step, codes, pending=challenge is not None, aal2=aal2
        )
        if challenge is None:
            first = await retrying(partial(self._confirm_signed_in, account, confirm, client, now))
            tokens = None
        else:
            first, tokens = await self._confirm_pending(challenge, account, confirm, client, now)
        self.outbox.wake()
        confirmed = replace(factor, confirmed_at=now, last_used_at=now)
        return Confirmed(_info(confirmed), [c.text for c in codes] if first else None, tokens)

    async def _activate(
        self,
        factor: Factor,
        step: int,
        codes: list[RecoveryCode],
        tx: UnitOfWork,
        account: Account,
        client: ClientInfo,
        now: datetime,
        session_id: str | None,
        *,
        pending: bool,
        aal2: bool,
    ) -> bool:
        """In the confirming transaction: the factor confirmed, recovery codes with the first,
        the event and the mail. Whether it was the user's first factor."""
        held = await second_factor_methods(tx, account.id, self.ctx.settings)
        if held and pending:
            raise Refused("factor_exists")
        if held and not aal2:
            raise StepUpRequiredError(acr_values=Acr.AAL2.value)
        if not await tx.confirm_factor(factor.id, step, now):
            raise UnknownFactorError("no factor waiting for confirmation with this id")
        first = MfaMethod.TOTP not in held  # recovery codes come with the first TOTP factor
        if first:
            await tx.replace_recovery_codes(account.id, [c.hash for c in codes], now)
        tx.add_event(
            NewEvent(
                EventType.MFA_ENROLLED,
                now,
                client,
                user_id=account.id,
                session_id=session_id,
                detail={"factor_id": factor.id, "type": factor.type.value},
            )
        )
        self._mail(tx, account, now, "enrolled")
        return first

    async def _confirm_signed_in(
        self,
        account: Account,
        confirm: _Activate,
        client: ClientInfo,
        now: datetime,
    ) -> bool:
        async with self.ctx.store.write() as tx:
            return await confirm(tx, account, client, now, None)

    async def _confirm_pending(
        self,
        challenge: MfaChallenge,
        account: Account,
        confirm: _Activate,
        client: ClientInfo,
        now: datetime,
    ) -> tuple[bool, IssuedTokens]:
        """Confirm the factor and complete the pending sign-in, in the session's transaction."""
        outcome: list[bool] = []

        async def admit(
            tx: UnitOfWork, user: Account, client: ClientInfo, at: datetime, session_id: str
        ) -> bool:
            await self._spend_challenge(tx, challenge)
            outcome[:] = [await confirm(tx, user, client, at, session_id)]
            return True

        tokens = await self.sign_in(account, admit, client, now)
        return outcome[0], tokens

    # -- the factors a user holds --------------------------------------------------------------

    async def factors(self, principal: Principal) -> Factors:
        async with self.ctx.store.read() as tx:
            factors = [_info(f) for f in await tx.factors(principal.user.id) if f.confirmed]
            left = await tx.recovery_codes_left(principal.user.id)
        return Factors(factors, left)

    async def remove(self, principal: Principal, factor_id: str, client: ClientInfo) -> None:
        """Delete a confirmed factor (aal2 and recent); the last one takes the recovery codes
        with it, and sign-ins ask for a password only again. UnknownFactorError first, for an
        id that is none of the user's (no step-up could help)."""
        if factor_id not in {f.id for f in await self._confirmed(principal.user.id)}:
            raise UnknownFactorError("no factor with this id")
        self.require_recent(principal, aal2=True)
        now = self.ctx.now()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                account = await tx.account(principal.user.id)
                held = [f for f in await tx.factors(principal.user.id) if f.confirmed]
                if account is None or factor_id not in {f.id for f in held}:
                    raise UnknownFactorError("no factor with this id")
                await tx.delete_factor(account.id, factor_id)
                tx.add_event(
                    NewEvent(
                        EventType.MFA_REMOVED,
                        now,
                        client,
                        user_id=account.id,
                        session_id=principal.session_id,
                        detail={"factor_id": factor_id, "factors_left": len(held) - 1},
                    )
                )
                self._mail(tx, account, now, "removed", factors_left=len(held) - 1)

        await retrying(write)
        self.outbox.wake()

    async def regenerate_recovery_codes(
        self, principal: Principal, client: ClientInfo
    ) -> list[str]:
        """A new set of recovery codes (aal2 and recent); the old set stops working.
        UnknownFactorError first for a user without a factor (recovery codes go with one)."""
        if not await self._confirmed(principal.user.id):
            raise UnknownFactorError("recovery codes go with a second factor: enrol one")
        self.require_recent(principal, aal2=True)
        now = self.ctx.now()
        codes = new_recovery_codes()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                account = await tx.account(principal.user.id)
                held = [f for f in await tx.factors(principal.user.id) if f.confirmed]
                if account is None or not held:
                    raise UnknownFactorError("recovery codes go with a second factor: enrol one")
                await tx.replace_recovery_codes(account.id, [c.hash for c in codes], now)
                tx.add_event(
                    NewEvent(
                        EventType.MFA_RECOVERY_CODES_REGENERATED,
                        now,
                        client,
                        user_id=account.id,
                        session_id=principal.session_id,
                        detail={"count": len(codes)},
                    )
                )
                self._mail(tx, account, now, "regenerated")

        await retrying(write)
        self.outbox.wake()
        return [c.text for c in codes]

    async def reset(self, user_id: str, actor: Actor) -> int:
        """An operator removes every second factor of the user, TOTP factors and passkeys (a
        lost phone and lost codes): the recovery codes go too, the user is mailed, and the next
        sign-in asks for the password alone. How many were removed; UnknownUserError."""
        now = self.ctx.now()

        async def write() -> int:
            async with self.ctx.store.write() as tx:
                account = await tx.account(user_id)
                if account is None:
                    raise UnknownUserError("no such user")
                held = await tx.factors(user_id)
                for factor in held:
                    await tx.delete_factor(user_id, factor.id)
                passkeys = await tx.passkeys(user_id)
                for passkey in passkeys:
                    await tx.delete_passkey(user_id, passkey.id)
                confirmed = [f.id for f in held if f.confirmed] + [p.id for p in passkeys]
                if confirmed:
                    tx.add_event(
                        NewEvent(
                            EventType.MFA_REMOVED,
                            now,
                            actor.client,
                            user_id=user_id,
                            detail=actor.detail(factors=len(confirmed), factors_left=0),
                        )
                    )
                    self._mail(tx, account, now, "removed", factors_left=0)
                return len(confirmed)

        removed = await retrying(write)
        self.outbox.wake()
        return removed

    # -- completing a pending sign-in ----------------------------------------------------------

    async def verify(
        self, mfa_token: str, method: MfaMethod, code: str, client: ClientInfo
    ) -> IssuedTokens:
        """Complete a pending sign-in with a TOTP code or a recovery code: a session at aal2.

        One MfaFailedError for every refusal (a wrong or replayed code, an unknown, used,
        expired or exhausted ``mfa_token``). Every attempt is counted against the pending
        sign-in (5) before its code is checked, so concurrent guesses cannot exceed it; a wrong
        one also against the account (``TOKENWARD_RATE_LIMIT_MFA_FAILURES_ACCOUNT``)."""
        challenge, account = await self.pending(mfa_token, enrolling=False)
        now = self.ctx.now()
        async with self.counted(account.id):
            await self.attempt(challenge, now)
            proof = await self._proof(account.id, method, code, now, client)

            async def admit(
                tx: UnitOfWork, user: Account, client: ClientInfo, at: datetime, session_id: str
            ) -> bool:
                await self._spend_challenge(tx, challenge)
                await self._spend(tx, proof, user, client, at, session_id)
                return True

            return await self.sign_in(account, admit, client, now)

    @asynccontextmanager
    async def counted(self, user_id: str) -> AsyncIterator[None]:
        """Count one failure against the account's MFA limit (refusing at once when it is
        used up), given back unless the block ends in MfaFailedError: a wrong or replayed
        code. A right code that fails for another reason (the claims hook, the database) is
        no guess."""
        await self.ctx.limits.hit(Limit.MFA_FAILURES_ACCOUNT, user_id)
        try:
            yield
        except MfaFailedError:
            raise
        except BaseException:
            await self.ctx.limits.refund(Limit.MFA_FAILURES_ACCOUNT, user_id)
            raise
        await self.ctx.limits.refund(Limit.MFA_FAILURES_ACCOUNT, user_id)

    async def attempt(self, challenge: MfaChallenge, now: datetime) -> None:
        """One attempt counted against the pending sign-in before its code is looked at."""

        async def write() -> bool:
            async with self.ctx.store.write() as tx:
                return await tx.reserve_mfa_attempt(challenge.id, now)

        if not await retrying(write):
            raise MfaFailedError("mfa_token used, expired or exhausted")

    async def sign_in(
        self,
        account: Account,
        admit: Admit,
        client: ClientInfo,
        now: datetime,
        authentication: Authentication | None = None,
    ) -> IssuedTokens:
        """A session at aal2 for the pending sign-in, if ``admit`` (which spends it) agrees;
        ``authentication``: a password and a one-time code unless said otherwise."""
        said = authentication or Authentication.with_second_factor(now)
        try:
            tokens = await self.sessions.start(account, client, now, said, admit)
        except Refused as refused:
            await self.failed(account.id, client, now, refused.reason)
            raise MfaFailedError(refused.reason) from None
        if tokens is None:  # disabled or deleted meanwhile (recorded as login.failed)
            raise MfaFailedError("user changed")
        self.outbox.wake()
        return tokens

    async def _spend_challenge(self, tx: UnitOfWork, challenge: MfaChallenge) -> None:
        """In the sign-in's transaction: the pending sign-in used, if it still may be (a new
        password since voided it: storage deletes a user's pending sign-ins with it)."""
        if not await tx.use_mfa_challenge(challenge.id, self.ctx.now()):
            raise Refused("challenge_used")

    async def _spend(
        self,
        tx: UnitOfWork,
        proof: _Proof,
        user: Account,
        client: ClientInfo,
        now: datetime,
        session_id: str | None,
    ) -> None:
        """In the transaction that relies on it: the code spent (once), and recorded."""
        if proof.method is MfaMethod.TOTP:
            assert proof.factor_id is not None and proof.step is not None  # noqa: S101
            if not await tx.use_factor_step(proof.factor_id, proof.step, now):
                raise Refused("replay")
            detail: dict[str, object] = {"method": proof.method.value}
        else:
            assert proof.code_hash is not None  # noqa: S101
            if not await tx.use_recovery_code(user.id, proof.code_hash, now):
                raise Refused("bad_code")
            left = await tx.recovery_codes_left(user.id)
            tx.add_event(
                NewEvent(
                    EventType.MFA_RECOVERY_CODE_USED,
                    now,
                    client,
                    user_id=user.id,
                    session_id=session_id,
                    detail={"remaining": left},
                )
            )
            self._mail(tx, user, now, "recovery_code_used", remaining=left)
            detail = {"method": proof.method.value, "remaining": left}
        tx.add_event(
            NewEvent(
                EventType.MFA_VERIFIED,
                now,
                client,
                user_id=user.id,
                session_id=session_id,
                detail=detail,
            )
        )

    async def _proof(
        self,
        user_id: str,
        method: MfaMethod,
        code: str,
        now: datetime,
        client: ClientInfo,
        session_id: str | None = None,
    ) -> _Proof:
        """Which factor's unused step (or which unused recovery code) ``code`` is; else the
        refusal, recorded (MfaFailedError). Read here, so that no wrong guess reaches the
        claims hook or a session's transaction; spent by the conditional write there, which
        decides between concurrent submissions."""
        reason = "bad_code"
        if len(code) <= MAX_CODE_LENGTH and method is MfaMethod.RECOVERY_CODE:
            code_hash = hash_recovery_code(code)
            async with self.ctx.store.read() as tx:
                if await tx.recovery_code_unused(user_id, code_hash):
                    return _Proof(method, code_hash=code_hash)
        elif len(code) <= MAX_CODE_LENGTH:
            for factor in await self._confirmed(user_id):
                secret = self._secret(factor)
                step = None if secret is None else matching_step(secret, code, now.timestamp())
                if step is not None and factor.accepts_step(step):
                    return _Proof(method, factor_id=factor.id, step=step)
                if step is not None:
                    reason = "replay"  # a step this factor accepted already
        await self.failed(user_id, client, now, reason, session_id)
        raise MfaFailedError(reason)

    async def pending(self, mfa_token: str, *, enrolling: bool) -> tuple[MfaChallenge, Account]:
        """The usable pending sign-in ``mfa_token`` names, and its user; MfaFailedError."""
        token = parse_challenge_token(mfa_token)
        if token is None:
            raise MfaFailedError("malformed mfa_token")
        now = self.ctx.now()
        async with self.ctx.store.read() as tx:
            challenge = await tx.mfa_challenge(hash_challenge_token(token))
            account = await tx.account(challenge.user_id) if challenge else None
        if challenge is None or account is None or account.disabled:
            raise MfaFailedError("unknown mfa_token")
        if not challenge.usable(now) or challenge.enrolling is not enrolling:
            raise MfaFailedError("mfa_token used, expired or exhausted")
        return challenge, account

    async def failed(
        self,
        user_id: str,
        client: ClientInfo,
        now: datetime,
        reason: str,
        session_id: str | None = None,
    ) -> None:
        """A refused code, recorded (``mfa.replay_rejected`` for a step used before)."""
        kind = EventType.MFA_REPLAY_REJECTED if reason == "replay" else EventType.MFA_FAILED

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                tx.add_event(
                    NewEvent(
                        kind,
                        now,
                        client,
                        user_id=user_id,
                        session_id=session_id,
                        detail={"reason": reason},
                    )
                )

        await retrying(write)

    # -- reauthenticating ----------------------------------------------------------------------

    async def reauthenticate(
        self,
        principal: Principal,
        client: ClientInfo,
        *,
        password: str | None = None,
        method: MfaMethod | None = None,
        code: str = "",
    ) -> Reauthenticated:
        """Prove it is still the user: the password (``auth_time`` renewed; aal2 kept only
        within AAL2_REAUTH_WINDOW of the session's last second factor) or a second factor
        (renewed, and aal2). The session's later tokens carry the result."""
        now = self.ctx.now()
        if password is not None:
            await check_current_password(self.ctx, principal, password, client)
            return await self.reauthenticated(
                principal,
                client,
                now,
                "password",
                lambda was: was.renewed(now, second_factor=False),
            )
        assert method is not None  # noqa: S101 - the web layer asks for one or the other
        if self.ctx.settings.mfa is MfaMode.OFF:
            raise MfaFailedError("second factors are off")  # ignored, as at sign-in
        async with self.counted(principal.user.id):
            proof = await self._proof(
                principal.user.id, method, code, now, client, principal.session_id
            )

            async def spend(tx: UnitOfWork, account: Account) -> None:
                await self._spend(tx, proof, account, client, now, principal.session_id)

            return await self.reauthenticated(
                principal,
                client,
                now,
                method.value,
                lambda was: was.renewed(now, second_factor=True),
                spend,
            )

    async def reauthenticated(
        self,
        principal: Principal,
        client: ClientInfo,
        now: datetime,
        method: str,
        renew: Callable[[Authentication], Authentication],
        spend: Callable[[UnitOfWork, Account], Awaitable[None]] | None = None,
    ) -> Reauthenticated:
        """The session's authentication renewed (``renew`` of what it was; what proved it
        spent by ``spend`` in the same transaction), and an access token that says so, signed
        first: a failure leaves nothing behind."""
        async with self.ctx.store.read() as tx:
            session = await tx.session(principal.session_id)
        if session is None:
            raise SessionEndedError("unknown session")
        renewed = renew(session.authenticated)
        access_token = await self.sessions.access_token(
            principal, renewed, client, TokenGrant.REAUTHENTICATE
        )

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                current = await tx.session(principal.session_id, lock=True)
                account = await tx.account(principal.user.id)
                if current is None or account is None:
                    raise SessionEndedError("unknown session")
                current.check_alive(now, user_disabled=account.disabled)
                if spend is not None:
                    await spend(tx, account)
                await tx.set_authentication(current.id, renewed)
                tx.add_event(
                    NewEvent(
                        EventType.REAUTHENTICATED,
                        now,
                        client,
                        user_id=account.id,
                        session_id=current.id,
                        detail={"method": method, "acr": renewed.acr.value},
                    )
                )

        try:
            await retrying(write)
        except Refused as refused:
            await self.failed(principal.user.id, client, now, refused.reason, principal.session_id)
            raise MfaFailedError(refused.reason) from None
        if spend is not None:
            self.outbox.wake()
        return Reauthenticated(access_token, self.ctx.access.ttl_seconds)

    # -- helpers -------------------------------------------------------------------------------

    async def _account(self, user_id: str) -> Account:
        async with self.ctx.store.read() as tx:
            account = await tx.account(user_id)
        if account is None or account.disabled:
            raise SessionEndedError("user gone or disabled")
        return account

    def _seal(self, factor_id: str, user_id: str, secret: TotpSecret) -> str:
        """The secret encrypted under the server secret, bound to its factor and user: a row
        copied onto another factor in the database does not unseal there."""
        return self._sealer.encrypt(f"{factor_id}:{user_id}:{secret.base32}".encode()).decode()

    def _secret(self, factor: Factor) -> TotpSecret | None:
        """The factor's secret; None (logged) when it does not unseal for this factor: another
        server secret, a damaged or a moved row. Its codes then match nothing."""
        try:
            opened = self._sealer.decrypt(factor.secret.encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            opened = ""
        bound, _, base32 = opened.rpartition(":")
        if bound != f"{factor.id}:{factor.user_id}" or not base32:
            _log.error("second factor %s does not unseal (server secret changed?)", factor.id)
            return None
        return TotpSecret(base32)

    def _mail(
        self, tx: UnitOfWork, account: Account, now: datetime, change: str, **more: object
    ) -> None:
        self.outbox.queue(
            tx,
            MailTemplate.MFA_CHANGED,
            to=account.email,
            now=now,
            user_id=account.id,
            context={"change": change, "app_url": self.ctx.settings.link_base, **more},
        )
