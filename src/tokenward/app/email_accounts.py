"""Accounts by email: verification, password reset, email change and deletion (docs/email.md).

Every flow that mails writes its change, its link token (hashed) and its mail in one unit of
work; the outbox sends later. Answers that could tell whether an account exists are the same
whatever the account's state, and each state does the same work: one write transaction (the
mail, or a recorded ``email.suppressed``), so the time does not tell either.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from tokenward.app.context import Context
from tokenward.app.credentials import check_current_password
from tokenward.app.outbox import Outbox
from tokenward.app.sessions import Principal
from tokenward.core.events import Actor, ClientInfo, EventType, NewEvent
from tokenward.core.onetime import LinkPurpose, LinkToken, hash_link_token, parse_link_token
from tokenward.core.passwords import normalize_password
from tokenward.core.sessions import EndReason
from tokenward.core.users import Account, normalize_email
from tokenward.exceptions import (
    AuthenticationError,
    EmailTakenError,
    InvalidEmailError,
    LinkInvalidError,
    RateLimitedError,
)
from tokenward.infra.mail import MailTemplate
from tokenward.infra.ratelimit import Limit
from tokenward.storage.port import UnitOfWork, retrying

__all__ = ["LANDING_PAGES", "EmailAccounts"]

LANDING_PAGES = {
    LinkPurpose.VERIFY_EMAIL: "verify-email",
    LinkPurpose.RESET_PASSWORD: "reset-password",
    LinkPurpose.CHANGE_EMAIL: "confirm-email",
    LinkPurpose.CANCEL_EMAIL_CHANGE: "cancel-email-change",
}
"""The page of ``TOKENWARD_APP_URL`` each link opens; the token rides in the fragment."""
_JOBS = {
    MailTemplate.VERIFY_EMAIL: LinkPurpose.VERIFY_EMAIL,
    MailTemplate.RESET_PASSWORD: LinkPurpose.RESET_PASSWORD,
}
"""The mails that requests queue as jobs (the answer must not tell whether an account exists)."""
_REQUESTED = {
    LinkPurpose.VERIFY_EMAIL: EventType.EMAIL_VERIFICATION_SENT,
    LinkPurpose.RESET_PASSWORD: EventType.PASSWORD_RESET_REQUESTED,
}


def _ineligible(account: Account | None, purpose: LinkPurpose) -> str | None:
    """Why ``account`` gets no link of ``purpose`` (for ``email.suppressed``), or None."""
    if account is None:
        return "no_account"
    if account.disabled:
        return "disabled"
    if purpose is LinkPurpose.VERIFY_EMAIL and account.email_verified_at is not None:
        return "already_verified"
    return None


def _in_words(ttl: timedelta) -> str:
    days, rest = divmod(int(ttl.total_seconds()), 86400)
    if days > 1 and not rest:
        return f"{days} days"
    hours, rest = divmod(int(ttl.total_seconds()), 3600)
    if hours and not rest:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, int(ttl.total_seconds()) // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class EmailAccounts:
    """What a user does with their address, and what they do when they lost their password."""

    def __init__(self, ctx: Context, outbox: Outbox) -> None:
        self.ctx = ctx
        self.outbox = outbox
        # A link's address (for a change: the new one, held by no account yet) is stored
        # sealed under the server secret, like a queued mail's recipient.
        self._sealer = Fernet(ctx.outbox_key)
        # The requests that must not tell whether an account exists queue a job, the same
        # row for every address; the worker decides it here, off the request path.
        for template, purpose in _JOBS.items():
            outbox.resolve_with(template, partial(self._resolve_job, purpose))

    # -- shared pieces ---------------------------------------------------------------------

    def _ttl(self, purpose: LinkPurpose) -> timedelta:
        settings = self.ctx.settings
        return {
            LinkPurpose.VERIFY_EMAIL: settings.email_verification_ttl,
            LinkPurpose.RESET_PASSWORD: settings.password_reset_ttl,
            LinkPurpose.CHANGE_EMAIL: settings.email_change_ttl,
            LinkPurpose.CANCEL_EMAIL_CHANGE: settings.email_change_ttl,
        }[purpose]

    async def _new_link(
        self,
        tx: UnitOfWork,
        user_id: str,
        purpose: LinkPurpose,
        email: str,
        now: datetime,
        ttl: timedelta | None = None,
    ) -> str:
        """A link of ``purpose`` for ``email``, superseding the user's earlier ones; its URL.
        ``ttl``: the purpose's own lifetime unless given (an invitation's is longer)."""
        await tx.void_links(user_id, now, purposes=(purpose,))
        issued = LinkToken.issue(
            id=str(uuid.uuid4()),
            user_id=user_id,
            purpose=purpose,
            email=self._sealer.encrypt(email.encode()).decode(),
            now=now,
            ttl=ttl or self._ttl(purpose),
        )
        await tx.add_link(issued.record)
        return f"{self.ctx.settings.link_base}/{LANDING_PAGES[purpose]}#token={issued.token}"

    async def _may_mail(self, address: str, kind: str) -> str | None:
        """None when a mail of ``kind`` may go to ``address`` now, else why not (a limit or the
        cooldown), for the ``email.suppressed`` event. Counted whether or not the address has
        an account, so the limits say nothing about that either."""
        limits = self.ctx.limits
        try:
            await limits.hit(Limit.EMAIL_ADDRESS, address)
        except RateLimitedError:
            return "rate_limited"
        try:
            await limits.hit(Limit.EMAIL_COOLDOWN, address, kind)
        except RateLimitedError:
            await limits.refund(Limit.EMAIL_ADDRESS, address)
            return "cooldown"
        return None

    async def _per_ip(self, client: ClientInfo) -> None:
        """The per-IP limit of mail-sending requests: over it, a 429 (it tells nothing about
        any account)."""
        await self.ctx.limits.hit(Limit.EMAIL_IP, self.ctx.limits.client(client.ip))

    @staticmethod
    def _suppressed(
        now: datetime,
        client: ClientInfo,
        reason: str,
        kind: str,
        user_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> NewEvent:
        return NewEvent(
            EventType.EMAIL_SUPPRESSED,
            now,
            client,
            user_id=user_id,
            detail={"reason": reason, "mail": kind, **(detail or {})},
        )

    async def _usable_link(self, tx: UnitOfWork, token: object, purpose: LinkPurpose) -> LinkToken:
        """The stored link behind ``token``, usable now, with its address unsealed;
        LinkInvalidError for anything else."""
        parsed = parse_link_token(token, purpose)
        if parsed is None:
            raise LinkInvalidError("malformed link token")
        link = await tx.link(hash_link_token(parsed))
        if link is None or link.purpose is not purpose or not link.usable(self.ctx.now()):
            raise LinkInvalidError("unknown, used or expired link token")
        try:
            email = self._sealer.decrypt(link.email.encode()).decode()
        except InvalidToken:
            raise LinkInvalidError("a link sealed under another secret") from None
        return replace(link, email=email)

    def _queued(self) -> None:
        self.outbox.wake()

    # -- verification ----------------------------------------------------------------------

    async def queue_verification(
        self, tx: UnitOfWork, account: Account, now: datetime, refused: str | None = None
    ) -> None:
        """The verification mail for a new account (register), in the caller's transaction;
        ``refused``: the address's limits said no, and only that is recorded."""
        if refused is not None:
            tx.add_event(self._suppressed(now, ClientInfo(), refused, "verify_email", account.id))
            return
        self.outbox.queue(
            tx,
            MailTemplate.VERIFY_EMAIL,
            to=account.email,
            now=now,
            user_id=account.id,
            context=await self._link_values(tx, account, LinkPurpose.VERIFY_EMAIL, now),
        )
        tx.add_event(NewEvent(EventType.EMAIL_VERIFICATION_SENT, now, user_id=account.id))

    async def request_verification(self, email: str, client: ClientInfo) -> None:
        """Queue a verification job for ``email``; the worker mails a link if the address has
        an unverified, enabled account (:meth:`_resolve_verification`).

        The request does the same for every address: one job row (or, over the address's
        limits, one ``email.suppressed`` event). Raises only InvalidEmailError for a malformed
        address and RateLimitedError for the per-IP limit."""
        await self._queue_job(email, client, MailTemplate.VERIFY_EMAIL, "verify_email")

    async def _queue_job(
        self, email: str, client: ClientInfo, template: MailTemplate, kind: str
    ) -> None:
        email = normalize_email(email)
        await self._per_ip(client)
        refused = await self._may_mail(email, kind)
        now = self.ctx.now()
        asked_by = {"ip": client.ip, "user_agent": client.user_agent}

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                if refused is not None:
                    tx.add_event(self._suppressed(now, client, refused, kind))
                    return
                self.outbox.queue(
                    tx, template, to=email, now=now, user_id=None, context=asked_by, job=True
                )

        await retrying(write)
        self._queued()

    async def _resolve_job(
        self,
        purpose: LinkPurpose,
        tx: UnitOfWork,
        email: str,
        asked_by: dict[str, Any],
        now: datetime,
    ) -> tuple[str | None, dict[str, Any]] | None:
        """Decide a queued verification or reset job (see :data:`app.outbox.Resolver`): a new
        link for an eligible account, else an ``email.suppressed`` event saying why not."""
        client = ClientInfo(asked_by.get("ip"), asked_by.get("user_agent"))
        account = await tx.account_by_email(email)
        reason = _ineligible(account, purpose)
        if reason is not None or account is None:
            user_id = account.id if account else None
            tx.add_event(self._suppressed(now, client, reason or "", purpose.value, user_id))
            return None
        tx.add_event(NewEvent(_REQUESTED[purpose], now, client, user_id=account.id))
        return account.id, await self._link_values(tx, account, purpose, now)

    async def _link_values(
        self,
        tx: UnitOfWork,
        account: Account,
        purpose: LinkPurpose,
        now: datetime,
        ttl: timedelta | None = None,
    ) -> dict[str, Any]:
        """A new link of ``purpose`` for ``account`` (lasting ``ttl``, or the purpose's own
        lifetime) and its mail's values."""
        ttl = ttl or self._ttl(purpose)
        link = await self._new_link(tx, account.id, purpose, account.email, now, ttl)
        return {"link": link, "expires_in": _in_words(ttl)}

    async def queue_invitation(self, tx: UnitOfWork, account: Account, now: datetime) -> None:
        """Mail an account made without a password a link to choose one (a reset link that
        lasts ``TOKENWARD_INVITATION_TTL``; using it also proves the address)."""
        ttl = self.ctx.settings.invitation_ttl
        self.outbox.queue(
            tx,
            MailTemplate.INVITATION,
            to=account.email,
            now=now,
            user_id=account.id,
            context=await self._link_values(tx, account, LinkPurpose.RESET_PASSWORD, now, ttl),
        )

    async def verify_email(self, token: object, client: ClientInfo) -> None:
        """Use a verification link: the address is proven. LinkInvalidError otherwise."""
        now = self.ctx.now()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                link = await self._usable_link(tx, token, LinkPurpose.VERIFY_EMAIL)
                account = await tx.account(link.user_id, lock=True)
                if account is None or account.email != link.email or account.disabled:
                    raise LinkInvalidError("the link was for another address, or disabled")
                if not await tx.use_link(link.id, now):
                    raise LinkInvalidError("link used meanwhile")
                if account.email_verified_at is None:
                    await tx.set_email_verified(account.id, now)
                tx.add_event(NewEvent(EventType.EMAIL_VERIFIED, now, client, user_id=account.id))

        await retrying(write)

    async def may_mail(self, address: str, kind: str) -> str | None:
        """:meth:`_may_mail` for registration, which charges the address's limits before its
        transaction (never inside it: a retried transaction would charge them twice)."""
        return await self._may_mail(address, kind)

    async def signup_attempt(
        self, tx: UnitOfWork, account: Account, now: datetime, refused: str | None
    ) -> None:
        """Someone registered an address that has an account (required verification): tell
        its owner, unless the address's limits said no (``refused``), in the caller's
        transaction."""
        if refused is not None:
            tx.add_event(self._suppressed(now, ClientInfo(), refused, "signup_attempt", account.id))
            return
        self.outbox.queue(
            tx,
            MailTemplate.SIGNUP_ATTEMPT,
            to=account.email,
            now=now,
            user_id=account.id,
            context={"app_url": self.ctx.settings.link_base},
        )

    # -- password reset --------------------------------------------------------------------

    async def forgot_password(self, email: str, client: ClientInfo) -> None:
        """Queue a reset job for ``email``; the worker mails a link if the address has an
        enabled account (:meth:`_resolve_reset`). The same answer and the same work, one job
        row, for every address."""
        await self._queue_job(email, client, MailTemplate.RESET_PASSWORD, "reset_password")

    async def send_reset(self, email: str) -> None:
        """An operator's ``tokenward users send-reset``: the same mail, no limits, and the
        operator never sees the link. UnknownUserError for an address without an account."""
        from tokenward.exceptions import UnknownUserError

        email = normalize_email(email)
        now = self.ctx.now()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                account = await tx.account_by_email(email)
                if account is None:
                    raise UnknownUserError(f"no user with email {email}")
                self.outbox.queue(
                    tx,
                    MailTemplate.RESET_PASSWORD,
                    to=account.email,
                    now=now,
                    user_id=account.id,
                    context=await self._link_values(tx, account, LinkPurpose.RESET_PASSWORD, now),
                )
                tx.add_event(
                    NewEvent(
                        EventType.PASSWORD_RESET_REQUESTED,
                        now,
                        user_id=account.id,
                        detail={"by": "operator"},
                    )
                )

        await retrying(write)

    async def reset_password(self, token: object, new_password: str, client: ClientInfo) -> None:
        """Set a new password from a reset link: the policy first (a weak password does not
        use the link up), then in one transaction the hash, the sessions ended, every other
        link voided and a notice mailed. No sign-in follows."""
        async with self.ctx.store.read() as tx:
            link = await self._usable_link(tx, token, LinkPurpose.RESET_PASSWORD)
        new_password = normalize_password(new_password)
        self.ctx.policy.check(new_password, email=link.email)
        password_hash = await self.ctx.hashed(self.ctx.hasher.hash, new_password)
        now = self.ctx.now()
        end_sessions = self.ctx.settings.password_reset_end_sessions == "all"  # noqa: S105

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                account = await tx.account(link.user_id, lock=True)
                if account is None or account.email != link.email or account.disabled:
                    raise LinkInvalidError("the link was for another address, or disabled")
                if not await tx.use_link(link.id, now):
                    raise LinkInvalidError("link used meanwhile")
                await tx.set_password_hash(account.id, password_hash, changed_at=now)
                if account.email_verified_at is None:
                    await tx.set_email_verified(account.id, now)  # the mail reached them
                await tx.void_links(account.id, now)
                ended = (
                    await tx.end_sessions(account.id, now, EndReason.PASSWORD_RESET)
                    if end_sessions
                    else []
                )
                self.outbox.queue(
                    tx,
                    MailTemplate.PASSWORD_RESET_DONE,
                    to=account.email,
                    now=now,
                    user_id=account.id,
                    context={
                        "app_url": self.ctx.settings.link_base,
                        "sessions_ended": bool(ended),
                    },
                )
                tx.add_event(
                    NewEvent(
                        EventType.PASSWORD_RESET,
                        now,
                        client,
                        user_id=account.id,
                        detail={"sessions_ended": len(ended)},
                    )
                )

        await retrying(write)
        self._queued()

    # -- email change ----------------------------------------------------------------------

    async def request_change(
        self, principal: Principal, new_email: str, current_password: str, client: ClientInfo
    ) -> None:
        """Mail a confirmation link to ``new_email`` and a notice with a cancel link to the
        current address. An address another account holds gets the same answer and no mail."""
        new_email = normalize_email(new_email)
        current_password = normalize_password(current_password)
        self.ctx.policy.check_length_cap(current_password)
        await self._per_ip(client)
        account_id = principal.user.id
        row, verified = await check_current_password(self.ctx, principal, current_password, client)
        now = self.ctx.now()
        if new_email == row.email:
            raise InvalidEmailError("the new address is the current one")
        refused = await self._may_mail(new_email, "email_change")

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                account = await tx.account(account_id, lock=True)
                if account is None or account.password_hash != verified.password_hash:
                    # Gone, or its password changed since the check: what was verified is
                    # not the account's password any more (a change voids every link).
                    raise AuthenticationError("the current password is incorrect")
                holder = await tx.account_by_email(new_email)
                reason = refused or ("address_taken" if holder is not None else None)
                await tx.void_links(
                    account.id,
                    now,
                    purposes=(LinkPurpose.CHANGE_EMAIL, LinkPurpose.CANCEL_EMAIL_CHANGE),
                )
                expires_in = _in_words(self.ctx.settings.email_change_ttl)
                if reason is None:
                    confirm = await self._new_link(
                        tx, account.id, LinkPurpose.CHANGE_EMAIL, new_email, now
                    )
                    self.outbox.queue(
                        tx,
                        MailTemplate.EMAIL_CHANGE_CONFIRM,
                        to=new_email,
                        now=now,
                        user_id=account.id,
                        context={"link": confirm, "expires_in": expires_in},
                    )
                else:
                    # No mail to an address another account holds (or one over its limits).
                    # Everything the requester can see stays as it would be: the notice and
                    # its cancel link below, and their own events; the reason is recorded
                    # under no user, for operators only.
                    tx.add_event(
                        self._suppressed(
                            now, client, reason, "email_change", detail={"for_user": account.id}
                        )
                    )
                cancel = await self._new_link(
                    tx, account.id, LinkPurpose.CANCEL_EMAIL_CHANGE, account.email, now
                )
                self.outbox.queue(
                    tx,
                    MailTemplate.EMAIL_CHANGE_NOTICE,
                    to=account.email,
                    now=now,
                    user_id=account.id,
                    context={"cancel_link": cancel, "expires_in": expires_in},
                )
                tx.add_event(
                    NewEvent(
                        EventType.EMAIL_CHANGE_REQUESTED,
                        now,
                        client,
                        user_id=account.id,
                        session_id=principal.session_id,
                    )
                )

        await retrying(write)
        self._queued()

    async def confirm_change(self, token: object, client: ClientInfo) -> None:
        """Use a confirmation link: the address changes now, proven; the old one is told.
        EmailTakenError if another account took the address meanwhile."""
        now = self.ctx.now()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                link = await self._usable_link(tx, token, LinkPurpose.CHANGE_EMAIL)
                account = await tx.account(link.user_id, lock=True)
                if account is None or account.disabled:
                    raise LinkInvalidError("the account is gone or disabled")
                if not await tx.use_link(link.id, now):
                    raise LinkInvalidError("link used meanwhile")
                old = account.email
                await tx.set_email(account.id, link.email, verified_at=now)
                await tx.void_links(account.id, now)
                self.outbox.queue(
                    tx, MailTemplate.EMAIL_CHANGED, to=old, now=now, user_id=account.id
                )
                tx.add_event(NewEvent(EventType.EMAIL_CHANGED, now, client, user_id=account.id))

        try:
            await retrying(write)
        except EmailTakenError:
            raise EmailTakenError("another account has taken this address meanwhile") from None
        self._queued()

    async def cancel_change(self, token: object, client: ClientInfo) -> None:
        """Use a cancel link (sent to the old address): the pending change dies."""
        now = self.ctx.now()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                link = await self._usable_link(tx, token, LinkPurpose.CANCEL_EMAIL_CHANGE)
                if not await tx.use_link(link.id, now):
                    raise LinkInvalidError("link used meanwhile")
                await tx.void_links(link.user_id, now, purposes=(LinkPurpose.CHANGE_EMAIL,))
                tx.add_event(
                    NewEvent(
                        EventType.EMAIL_CHANGE_CANCELLED,
                        now,
                        client,
                        user_id=link.user_id,
                        detail={"by": "cancel_link"},
                    )
                )

        await retrying(write)

    async def withdraw_change(self, principal: Principal, client: ClientInfo) -> None:
        """The signed-in user withdraws a pending change (its links die)."""
        await self.ctx.limits.hit(Limit.USER_ACTIONS, principal.user.id)
        now = self.ctx.now()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                voided = await tx.void_links(
                    principal.user.id,
                    now,
                    purposes=(LinkPurpose.CHANGE_EMAIL, LinkPurpose.CANCEL_EMAIL_CHANGE),
                )
                if voided:
                    tx.add_event(
                        NewEvent(
                            EventType.EMAIL_CHANGE_CANCELLED,
                            now,
                            client,
                            user_id=principal.user.id,
                            session_id=principal.session_id,
                            detail={"by": "user"},
                        )
                    )

        await retrying(write)

    # -- deletion --------------------------------------------------------------------------

    async def delete_account(
        self, principal: Principal, current_password: str, client: ClientInfo
    ) -> None:
        """Check the password, then end every session (the revocation feed carries them),
        delete the user, their links and pending mails, and mail a confirmation."""
        current_password = normalize_password(current_password)
        self.ctx.policy.check_length_cap(current_password)
        row, verified = await check_current_password(self.ctx, principal, current_password, client)
        removed = await self.remove(
            row.id, client, self.ctx.now(), password_hash=verified.password_hash
        )
        if not removed:
            raise AuthenticationError("the current password is incorrect")

    async def remove(
        self,
        user_id: str,
        client: ClientInfo,
        now: datetime,
        *,
        password_hash: str | None = None,
        actor: Actor | None = None,
    ) -> bool:
        """Delete the account (the user's request, or ``actor``'s: an operator, an admin
        client); ``password_hash``: only if the password is still the one the user proved."""

        async def write() -> bool:
            async with self.ctx.store.write() as tx:
                account = await tx.account(user_id, lock=True)
                if account is None:
                    return False
                if password_hash is not None and account.password_hash != password_hash:
                    return False
                ended = await tx.end_sessions(account.id, now, EndReason.ACCOUNT_DELETED)
                await tx.drop_mail(account.id)
                await tx.delete_account(account.id)
                self.outbox.queue(
                    tx, MailTemplate.ACCOUNT_DELETED, to=account.email, now=now, user_id=None
                )
                tx.add_event(
                    NewEvent(
                        EventType.USER_DELETED,
                        now,
                        client,
                        user_id=account.id,
                        detail=(actor.detail if actor else dict)(sessions_ended=len(ended)),
                    )
                )
            return True

        removed = await retrying(write)
        self._queued()
        return removed

    async def mark_verified(self, email: str) -> bool:
        """An operator's ``tokenward users verify``; False if it already was."""
        from tokenward.exceptions import UnknownUserError

        email = normalize_email(email)
        now = self.ctx.now()

        async def write() -> bool:
            async with self.ctx.store.write() as tx:
                account = await tx.account_by_email(email)
                if account is None:
                    raise UnknownUserError(f"no user with email {email}")
                if account.email_verified_at is not None:
                    return False
                await tx.set_email_verified(account.id, now)
                await tx.void_links(account.id, now, purposes=(LinkPurpose.VERIFY_EMAIL,))
                tx.add_event(
                    NewEvent(
                        EventType.EMAIL_VERIFIED, now, user_id=account.id, detail={"by": "operator"}
                    )
                )
            return True

        return await retrying(write)
