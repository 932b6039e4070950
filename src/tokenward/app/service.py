"""The one wiring site: opens storage and keys, and puts the capabilities together.

The web app, the CLI and an embedding application all open an :class:`AuthService` and use its
capabilities: ``accounts``, ``sessions``, ``signing_keys``, ``email_accounts``, ``roles``,
``profiles``, ``user_admin`` (the admin API's), ``mfa`` (second factors), ``passkeys``,
``claims`` (operators and resource servers build on it: ``app.operators.Admin``,
``app.resource_servers.ClientService``).
"""

from __future__ import annotations

import asyncio
from functools import cached_property

from tokenward.app.accounts import Accounts, ImportReport
from tokenward.app.claims import CustomClaims, load_hook
from tokenward.app.context import SYSTEM_CLOCK, Clock, Context, wall_time
from tokenward.app.email_accounts import EmailAccounts
from tokenward.app.mfa import SecondFactors
from tokenward.app.outbox import Outbox
from tokenward.app.passkeys import Passkeys
from tokenward.app.profiles import Profiles
from tokenward.app.roles import Roles
from tokenward.app.sessions import IssuedTokens, Principal, Sessions
from tokenward.app.signing_keys import SigningKeys
from tokenward.app.user_admin import UserAdmin
from tokenward.core.claims import ClaimsHook
from tokenward.core.events import ClientInfo
from tokenward.core.passwords import PasswordHasher
from tokenward.exceptions import UnavailableError
from tokenward.infra.config import Settings
from tokenward.infra.mail import (
    Composer,
    Delivery,
    LogDelivery,
    SmtpDelivery,
    SmtpTarget,
)
from tokenward.infra.masterkey import MasterKey
from tokenward.storage import Database
from tokenward.storage.keys import KeyStore

__all__ = [
    "SYSTEM_CLOCK",
    "AuthService",
    "ClientInfo",
    "Clock",
    "ImportReport",
    "IssuedTokens",
    "Principal",
    "claims_hook_of",
]

READINESS_TIMEOUT = 3.0


def mail_delivery(settings: Settings) -> Delivery | None:
    """Where mail goes by the settings: SMTP, the log (development), or nowhere (None)."""
    if settings.mail_delivery == "none":
        return None
    if settings.mail_delivery == "log":
        return LogDelivery()
    assert settings.smtp_url is not None  # noqa: S101 - the settings check made sure
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    target = SmtpTarget.from_url(
        settings.smtp_url, username=settings.smtp_username, password=password
    )
    return SmtpDelivery(target, timeout=settings.smtp_timeout.total_seconds())


def mail_composer(settings: Settings) -> Composer | None:
    if settings.mail_delivery == "none":
        return None
    sender = settings.email_from or "tokenward <tokenward@localhost>"
    return Composer(sender, settings.email_templates)


def claims_hook_of(settings: Settings) -> ClaimsHook | None:
    """The function ``TOKENWARD_CLAIMS_HOOK`` names (imported now: ConfigError if it cannot
    be), or None. Only what issues tokens loads it; the CLI never needs the module."""
    return load_hook(settings.claims_hook) if settings.claims_hook else None


class AuthService(Context):
    """One per process: the shared context, and each capability built on it."""

    @cached_property
    def accounts(self) -> Accounts:
        return Accounts(self, self.email_accounts)

    @cached_property
    def sessions(self) -> Sessions:
        return Sessions(self, self.claims)

    @cached_property
    def mfa(self) -> SecondFactors:
        return SecondFactors(self, self.sessions, self.outbox)

    @cached_property
    def passkeys(self) -> Passkeys:
        return Passkeys(self, self.sessions, self.mfa)

    @cached_property
    def claims(self) -> CustomClaims:
        return CustomClaims(self, self.claims_hook)

    @cached_property
    def roles(self) -> Roles:
        return Roles(self)

    @cached_property
    def profiles(self) -> Profiles:
        return Profiles(self)

    @cached_property
    def user_admin(self) -> UserAdmin:
        return UserAdmin(self, self.accounts, self.email_accounts)

    @cached_property
    def signing_keys(self) -> SigningKeys:
        return SigningKeys(self)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(
            self, delivery=mail_delivery(self.settings), composer=mail_composer(self.settings)
        )

    @cached_property
    def email_accounts(self) -> EmailAccounts:
        return EmailAccounts(self, self.outbox)

    async def send_mail(self, stopping: asyncio.Event) -> None:
        """The outbox worker (until ``stopping``), with every capability that decides queued
        jobs wired in first: a process that has served no request yet sends what another
        process (or one before a crash) queued."""
        self.email_accounts  # noqa: B018 - built for its resolvers
        await self.outbox.run(stopping)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        hasher: PasswordHasher | None = None,
        claims_hook: ClaimsHook | None = None,
    ) -> AuthService:
        """Load (or make) the keys, connect, and bring the schema up to date.

        ``claims_hook``: the custom claims function, if any (the web app passes the one
        ``TOKENWARD_CLAIMS_HOOK`` names: see :func:`claims_hook_of`)."""
        db = Database(settings.sqlalchemy_url)
        try:
            await db.migrate()
            master = MasterKey.load(settings)
            keys = KeyStore(db, master, settings)
            keyring = await keys.ensure_signer(wall_time(clock))
        except BaseException:
            await db.dispose()  # no connection outlives a failed start
            raise
        return cls(
            settings,
            db,
            keys=keys,
            keyring=keyring,
            refresh_secret=master.refresh_mac_key(),
            outbox_key=master.outbox_key(),
            mfa_key=master.mfa_key(),
            hasher=hasher,
            clock=clock,
            claims_hook=claims_hook,
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
