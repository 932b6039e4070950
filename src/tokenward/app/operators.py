"""Operator actions behind the CLI: users, their sessions, the event log, housekeeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tokenward.app.service import AuthService
from tokenward.core.events import OPERATOR
from tokenward.core.users import Account, normalize_email
from tokenward.exceptions import InvalidEmailError, KeyRotationError, UnknownUserError
from tokenward.storage.port import EventInfo, SessionInfo

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
        self.store = service.store

    async def user(self, email: str) -> Account:
        try:
            normalized = normalize_email(email)
        except InvalidEmailError:
            raise UnknownUserError(f"no user with email {email!r}") from None
        async with self.store.read() as tx:
            account = await tx.account_by_email(normalized)
        if account is None:
            raise UnknownUserError(f"no user with email {normalized!r}")
        return account

    async def list_users(self) -> list[UserSummary]:
        async with self.store.read() as tx:
            found = await tx.accounts_with_live_sessions(self.service.now())
        return [
            UserSummary(user.id, user.email, user.created_at, user.disabled, live)
            for user, live in found
        ]

    async def set_disabled(self, email: str, disabled: bool) -> int:
        """Disable (ending every session) or enable a user; return the sessions ended."""
        account = await self.user(email)
        return await self.service.user_admin.set_disabled(account.id, disabled, OPERATOR)

    async def sessions(self, email: str) -> list[SessionInfo]:
        account = await self.user(email)
        return await self.service.user_admin.sessions(account.id)

    async def revoke(self, email: str, session_id: str | None = None) -> int:
        """End one session of the user, or all of them; return how many ended."""
        account = await self.user(email)
        return await self.service.user_admin.revoke_sessions(account.id, OPERATOR, only=session_id)

    async def grant(self, email: str, role: str, *, end_sessions: bool = False) -> bool:
        """Give the user a role; False if they held it already."""
        account = await self.user(email)
        return await self.service.roles.grant(account.id, role, OPERATOR, end_sessions=end_sessions)

    async def revoke_role(self, email: str, role: str, *, end_sessions: bool = False) -> None:
        account = await self.user(email)
        await self.service.roles.revoke(account.id, role, OPERATOR, end_sessions=end_sessions)

    async def reset_mfa(self, email: str) -> int:
        """Remove every second factor of the user; return how many were removed."""
        account = await self.user(email)
        return await self.service.mfa.reset(account.id, OPERATOR)

    async def events(
        self, email: str | None = None, *, after_id: int | None = None, limit: int = 50
    ) -> list[EventInfo]:
        user_id = (await self.user(email)).id if email else None
        async with self.store.read() as tx:
            return await tx.events(user_id=user_id, after_id=after_id, limit=limit)

    async def keys(self) -> list[KeyInfo]:
        now = self.service.now()
        keyring = await self.service.keys.keyring()
        return [
            KeyInfo(key.kid, key.alg, keyring.state(key, now), key.activates_at, key.retired_at)
            for key in keyring.keys
        ]

    async def rotate_key(self, *, immediately: bool = False) -> KeyInfo:
        """A new signing key: published now, signing after the JWKS cache lifetime."""
        if self.service.settings.signing_alg == "HS256":
            raise KeyRotationError("HS256 uses TOKENWARD_HS256_SECRET: there is no key to rotate")
        key = await self.service.keys.rotate(self.service.now(), immediately=immediately)
        return KeyInfo(key.kid, key.alg, "upcoming", key.activates_at, None)

    async def retire_key(self, kid: str) -> None:
        """Withdraw a key at once: tokens it signed stop verifying (a compromised key)."""
        now = self.service.now()
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
        now = self.service.now()
        cutoff = now - ENDED_SESSION_GRACE
        events_cutoff = now - self.service.settings.event_retention
        async with self.store.write() as tx:
            sessions, events = await tx.prune(ended_before=cutoff, events_before=events_cutoff)
        return PruneReport(sessions=sessions, events=events)
