"""Users as a back office manages them (the admin API), by id and on behalf of an actor.

The CLI's operator actions (``app.operators.Admin``, by email) run through the same methods,
so a disabling or a revocation is written once whoever asks for it. Every change is an event
whose ``detail.by`` names the actor (and ``detail.client_id`` the admin client).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokenward.app.accounts import Accounts
from tokenward.app.context import Context
from tokenward.app.email_accounts import EmailAccounts
from tokenward.core.events import Actor, EventType, NewEvent
from tokenward.core.metadata import APP_METADATA_MAX_BYTES, checked_metadata
from tokenward.core.passwords import normalize_password
from tokenward.core.roles import Grants, check_role_name
from tokenward.core.sessions import EndReason
from tokenward.core.users import NO_PASSWORD, Account, normalize_email
from tokenward.exceptions import (
    EmailTakenError,
    InvalidCursorError,
    UnknownRoleError,
    UnknownUserError,
)
from tokenward.storage.port import EventInfo, SessionInfo, retrying

__all__ = ["ManagedUser", "UserAdmin", "UserPage"]

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class ManagedUser:
    """A user as the admin API shows it: the account and what it holds."""

    account: Account
    grants: Grants


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[ManagedUser]
    next_cursor: str | None
    """None on the last page."""


def _cursor(account: Account) -> str:
    """Opaque to clients: the (created_at, id) the next page starts after."""
    raw = f"{account.created_at.isoformat()}|{account.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, user_id = raw.split("|")
        after = datetime.fromisoformat(moment)
        uuid.UUID(user_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursorError("not one of our cursors") from None
    if after.tzinfo is None:
        raise InvalidCursorError("not one of our cursors")
    return after, user_id


class UserAdmin:
    """The admin API's user operations (and the CLI's, through app.operators)."""

    def __init__(self, ctx: Context, accounts: Accounts, email: EmailAccounts) -> None:
        self.ctx = ctx
        self._accounts = accounts
        self._email = email

    async def get(self, user_id: str) -> ManagedUser:
        async with self.ctx.store.read() as tx:
            account = await tx.account(user_id)
            if account is None:
                raise UnknownUserError("no such user")
            return ManagedUser(account, await tx.grants(user_id))

    async def page(
        self, *, cursor: str | None = None, email_prefix: str | None = None, limit: int = 50
    ) -> UserPage:
        """Users in creation order, ``limit`` at a time: a keyset page, so users created
        meanwhile never make one repeat or go missing (they come last)."""
        after = _after(cursor) if cursor else None
        # The form addresses are stored in (core.users.normalize_email: NFKC, lower-cased).
        prefix = (
            unicodedata.normalize("NFKC", email_prefix).strip().lower() if email_prefix else None
        )
        limit = max(1, min(limit, MAX_PAGE))
        async with self.ctx.store.read() as tx:
            found = await tx.accounts_page(after=after, email_prefix=prefix, limit=limit + 1)
        users = [ManagedUser(account, grants) for account, grants in found[:limit]]
        more = len(found) > limit
        return UserPage(users, _cursor(users[-1].account) if more else None)

    async def create(
        self,
        email: str,
        actor: Actor,
        *,
        password: str | None = None,
        email_verified: bool = False,
        app_metadata: Mapping[str, Any] | None = None,
        roles: Iterable[str] = (),
        send_invitation: bool | None = None,
    ) -> ManagedUser:
        """A new user, with a password or without one. Without one, and with mail on, an
        invitation link to choose it is mailed (unless ``send_invitation`` is False); until
        then nobody can sign in as the user. Roles must exist (UnknownRoleError)."""
        email = normalize_email(email)
        metadata = checked_metadata(
            app_metadata or {}, max_bytes=APP_METADATA_MAX_BYTES, what="app_metadata"
        )
        wanted = tuple(sorted({check_role_name(role) for role in roles}))
        mail_on = self.ctx.settings.mail_delivery != "none"
        invite = password is None and (mail_on if send_invitation is None else send_invitation)
        if password is not None:
            password = normalize_password(password)
            self.ctx.policy.check(password, email=email)
            password_hash = await self.ctx.hashed(self.ctx.hasher.hash, password)
        else:
            password_hash = NO_PASSWORD
        now = self.ctx.now()
        account = Account(
            id=str(uuid.uuid4()),
            email=email,
            password_hash=password_hash,
            created_at=now,
            password_changed_at=now,
            email_verified_at=now if email_verified else None,
            app_metadata=metadata,
        )

        async def write() -> Grants:
            async with self.ctx.store.write() as tx:
                if await tx.account_by_email(email) is not None:
                    raise EmailTakenError("an account with this email already exists")
                for role in wanted:
                    if await tx.role(role) is None:
                        raise UnknownRoleError(f"no role {role!r}")
                await tx.add_account(account)
                await tx.grant_existing_roles(
                    account.id, (*self.ctx.settings.default_roles, *wanted), now
                )
                detail = actor.detail(invited=invite, roles=list(wanted))
                tx.add_event(
                    NewEvent(EventType.USER_CREATED, now, actor.client, account.id, detail=detail)
                )
                if invite and mail_on:
                    await self._email.queue_invitation(tx, account, now)
                    tx.add_event(
                        NewEvent(
                            EventType.USER_INVITED,
                            now,
                            actor.client,
                            account.id,
                            detail=actor.detail(),
                        )
                    )
                return (await tx.grants(account.id)).check_size()

        grants = await retrying(write)
        if invite and mail_on:
            self._email.outbox.wake()
        return ManagedUser(account, grants)

    async def set_disabled(self, user_id: str, disabled: bool, actor: Actor) -> int:
        """Disable (ending every session, voiding mailed links) or enable the user; the
        number of sessions ended. UnknownUserError for no such user."""
        now = self.ctx.now()

        async def write() -> int:
            async with self.ctx.store.write() as tx:
                # Locked: a racing login sees it disabled or not.
                if await tx.account(user_id, lock=True) is None:
                    raise UnknownUserError("no such user")
                await tx.set_disabled(user_id, now if disabled else None)
                if disabled:
                    await tx.void_links(user_id, now)  # no mailed link outlives a disabling
                ended = (
                    await tx.end_sessions(user_id, now, EndReason.USER_DISABLED) if disabled else []
                )
                kind = EventType.USER_DISABLED if disabled else EventType.USER_ENABLED
                detail = actor.detail(sessions_ended=len(ended))
                tx.add_event(NewEvent(kind, now, actor.client, user_id, detail=detail))
            return len(ended)

        return await retrying(write)

    async def delete(self, user_id: str, actor: Actor) -> None:
        """Delete the user (sessions ended through the revocation feed, a mail sent)."""
        if not await self._email.remove(user_id, actor.client, self.ctx.now(), actor=actor):
            raise UnknownUserError("no such user")

    async def set_app_metadata(
        self, user_id: str, value: Mapping[str, Any], actor: Actor
    ) -> ManagedUser:
        """Replace the user's app_metadata whole (InvalidMetadataError past the cap)."""
        metadata = checked_metadata(value, max_bytes=APP_METADATA_MAX_BYTES, what="app_metadata")
        now = self.ctx.now()

        async def write() -> ManagedUser:
            async with self.ctx.store.write() as tx:
                account = await tx.account(user_id, lock=True)
                if account is None:
                    raise UnknownUserError("no such user")
                await tx.set_app_metadata(user_id, metadata)
                tx.add_event(
                    NewEvent(
                        EventType.APP_METADATA_CHANGED,
                        now,
                        actor.client,
                        user_id,
                        detail=actor.detail(),
                    )
                )
                grants = await tx.grants(user_id)
            return ManagedUser(_with_app_metadata(account, metadata), grants)

        return await retrying(write)

    async def sessions(self, user_id: str) -> list[SessionInfo]:
        async with self.ctx.store.read() as tx:
            if await tx.account(user_id) is None:
                raise UnknownUserError("no such user")
            return await tx.live_sessions(user_id, self.ctx.now())

    async def revoke_sessions(self, user_id: str, actor: Actor, *, only: str | None = None) -> int:
        """End one session of the user (``only``), or all of them; how many ended."""
        now = self.ctx.now()

        async def write() -> int:
            async with self.ctx.store.write() as tx:
                if await tx.account(user_id) is None:
                    raise UnknownUserError("no such user")
                ended = await tx.end_sessions(user_id, now, EndReason.REVOKED, only=only)
                for sid in ended:
                    tx.add_event(
                        NewEvent(
                            EventType.SESSION_REVOKED,
                            now,
                            actor.client,
                            user_id,
                            session_id=sid,
                            detail=actor.detail(),
                        )
                    )
            return len(ended)

        return await retrying(write)

    async def events(self, user_id: str, *, limit: int = 50) -> list[EventInfo]:
        async with self.ctx.store.read() as tx:
            if await tx.account(user_id) is None:
                raise UnknownUserError("no such user")
            return await tx.events(user_id=user_id, limit=limit)


def _with_app_metadata(account: Account, metadata: dict[str, Any]) -> Account:
    return dataclasses.replace(account, app_metadata=metadata)
