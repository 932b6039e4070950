"""Accounts: registering, importing users with their hashes, changing the password."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenward.app.context import Context
from tokenward.app.credentials import check_current_password
from tokenward.app.email_accounts import EmailAccounts
from tokenward.app.sessions import Principal
from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.passwords import ImportedHashError, check_imported_hash, normalize_password
from tokenward.core.sessions import EndReason
from tokenward.core.users import Account, User, normalize_email
from tokenward.exceptions import AuthenticationError, EmailTakenError, InvalidEmailError
from tokenward.infra.ratelimit import Limit
from tokenward.storage.port import retrying

__all__ = ["Accounts", "ImportReport"]


@dataclass
class ImportReport:
    imported: int = 0
    skipped_existing: int = 0
    rejected: list[int] = field(default_factory=list)
    """1-based numbers of the records that were not valid."""
    reasons: dict[int, str] = field(default_factory=dict)
    """Why a rejected record's hash was refused, by record number (never the hash itself)."""


class Accounts:
    """What a user (or an operator, for them) does to an account."""

    def __init__(self, ctx: Context, email: EmailAccounts) -> None:
        self.ctx = ctx
        self._email = email

    async def register(self, email: str, password: str, client: ClientInfo | None = None) -> User:
        """Create a user. Raises InvalidEmailError, PasswordPolicyError or EmailTakenError.

        ``client`` is the HTTP caller (rate-limited per IP); None means an operator. Unless
        ``TOKENWARD_EMAIL_VERIFICATION`` is off, a verification mail is queued with an account
        registered over HTTP.
        """
        user = await self._register(email, password, client, blind=False)
        assert user is not None  # noqa: S101 - not blind: a taken address raised
        return user

    async def register_blind(self, email: str, password: str, client: ClientInfo) -> None:
        """Registration that tells nothing (``TOKENWARD_EMAIL_VERIFICATION=required``): a new
        and a taken address get the same answer after the same work (the hash, one write).
        A new account gets the verification mail; the owner of a taken address a "someone
        tried to sign up" one, within the address's mail limits."""
        await self._register(email, password, client, blind=True)

    async def _register(
        self, email: str, password: str, client: ClientInfo | None, *, blind: bool
    ) -> User | None:
        if client is not None:
            await self.ctx.limits.hit(Limit.REGISTER_IP, self.ctx.limits.client(client.ip))
        email = normalize_email(email)
        password = normalize_password(password)
        self.ctx.policy.check(password, email=email)
        mode = self.ctx.settings.email_verification
        if not blind:
            async with self.ctx.store.read() as tx:
                if await tx.account_by_email(email) is not None:
                    raise EmailTakenError("an account with this email already exists")
        password_hash = await self.ctx.hashed(self.ctx.hasher.hash, password)
        now = self.ctx.now()
        account = Account.new(
            id=str(uuid.uuid4()), email=email, password_hash=password_hash, now=now
        )
        kind = EventType.USER_REGISTERED if client else EventType.USER_CREATED
        event = NewEvent(kind, now, client or ClientInfo(), user_id=account.id)
        mail = self.ctx.settings.mail_delivery != "none" and mode != "off" and client is not None
        # The address's mail limits, charged before the transaction and whichever mail it
        # turns out to be (a verification, or a "someone tried to sign up").
        refused = await self._email.may_mail(email, "register") if mail else None

        async def insert() -> bool:
            async with self.ctx.store.write() as tx:
                if blind:
                    holder = await tx.account_by_email(email)
                    if holder is not None:
                        await self._email.signup_attempt(tx, holder, now, refused)
                        return False
                await tx.add_account(account)
                await tx.grant_existing_roles(account.id, self.ctx.settings.default_roles, now)
                tx.add_event(event)
                if mail:
                    await self._email.queue_verification(tx, account, now, refused)
            return True

        try:
            created = await retrying(insert)
        except EmailTakenError:
            if not blind:
                raise
            created = False  # a racing request registered it just now: taken, still a 202

        if mail:
            self._email.outbox.wake()
        return account.user if created and not blind else None

    async def import_users(self, records: Iterable[Mapping[str, Any]]) -> ImportReport:
        """Take users with existing hashes (argon2 or bcrypt): no password reset needed."""
        report = ImportReport()
        now = self.ctx.now()
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
            async with self.ctx.store.write() as tx:
                if await tx.account_by_email(email) is not None:
                    report.skipped_existing += 1
                    continue
                account = Account.new(
                    id=str(uuid.uuid4()), email=email, password_hash=password_hash, now=now
                )
                await tx.add_account(account)
                await tx.grant_existing_roles(account.id, self.ctx.settings.default_roles, now)
                tx.add_event(NewEvent(EventType.USER_IMPORTED, now, user_id=account.id))
            report.imported += 1
        return report

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
        self.ctx.policy.check_length_cap(current)
        self.ctx.policy.check(new, email=principal.user.email)
        await self.ctx.limits.hit(Limit.PASSWORD_CHANGE_ACCOUNT, principal.user.id)
        _, verified = await check_current_password(self.ctx, principal, current, client)
        now = self.ctx.now()
        password_hash = await self.ctx.hashed(self.ctx.hasher.hash, new)

        async def replace() -> bool:
            async with self.ctx.store.write() as tx:
                user = await tx.account(principal.user.id, lock=True)
                if user is None or user.password_hash != verified.password_hash:
                    return False  # changed by another request since the check: not ours to undo
                await tx.set_password_hash(user.id, password_hash, changed_at=now)
                await tx.void_links(user.id, now)  # no mailed link outlives a password change
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
