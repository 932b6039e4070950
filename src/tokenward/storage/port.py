"""The storage port: what the use cases ask of storage, in core values, with no SQL in sight.

A use case opens a unit of work (``store.write()`` or ``store.read()``) and calls these
methods on it; the adapter (``storage.sql``, SQLAlchemy on SQLite and PostgreSQL) commits
when the block ends and rolls back on any exception. ``retrying`` runs one unit of work
again when the database rolled it back as a conflict: around the transaction only, never
around the hashes or rate-limit hits before it.

The refresh rotation, the hottest write, also has lean adapters (:class:`RotationWriter`):
plain ``sqlite3`` on a SQLite file, asyncpg on PostgreSQL. They run the same decision
(``Session.rotate``, passed in as ``decide``) and write only a plain rotation; anything else
they decline (:class:`FastPathDeclined`) before committing, and the unit of work does it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tokenward.core.events import NewEvent
from tokenward.core.mfa import Authentication, Factor, MfaChallenge
from tokenward.core.onetime import LinkPurpose, LinkToken
from tokenward.core.passkeys import Passkey, WebauthnChallenge
from tokenward.core.roles import Grants, Role
from tokenward.core.sessions import EndReason, RotationOutcome, Session
from tokenward.core.users import Account
from tokenward.storage.db import retrying
from tokenward.storage.errors import FastPathDeclined
from tokenward.storage.rotation_rows import Rotated

__all__ = [
    "ClientRecord",
    "Decide",
    "EventInfo",
    "FastPathDeclined",
    "MailState",
    "OutgoingMail",
    "QueuedMail",
    "RevocationEntry",
    "Rotated",
    "RotationWriter",
    "SessionInfo",
    "Store",
    "UnitOfWork",
    "retrying",
]

Decide = Callable[[tuple[Session, bool] | None], RotationOutcome]
"""The rotation rule with the request's facts bound: (the session, its user disabled?) or
None for an unknown session, to what to save. Raises for a session that cannot rotate."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A live session as its user (or an operator) sees it."""

    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    device: str
    ip: str | None
    current: bool = False


@dataclass(frozen=True, slots=True)
class EventInfo:
    id: int
    at: datetime
    type: str
    user_id: str | None
    session_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A client's credentials (a resource server, or a back office with admin scopes): only
    the secret's hash is kept."""

    id: str
    name: str
    secret_hash: str
    created_at: datetime
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    """One line of the revocation log, numbered in commit order."""

    number: int
    session_id: str
    revoked_at: datetime


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A mail to queue: its template and its sealed payload (recipient and values)."""

    template: str
    user_id: str | None
    payload: str
    created_at: datetime
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class QueuedMail:
    """A mail claimed for an attempt (``attempts`` counts this one)."""

    id: int
    template: str
    user_id: str | None
    payload: str | None
    message_id: str
    attempts: int


@dataclass(frozen=True, slots=True)
class MailState:
    """A mail as operators see it: never its recipient or its payload."""

    id: int
    template: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    payload_kept: bool

    @property
    def state(self) -> str:
        if self.sent_at is not None:
            return "sent"
        if self.failed_at is not None:
            return "failed"
        return "retrying" if self.last_error is not None else "queued"


class UnitOfWork(Protocol):
    """One transaction's worth of storage operations."""

    # -- accounts --------------------------------------------------------------------------
    async def account(self, user_id: str, *, lock: bool = False) -> Account | None:
        """The account; ``lock`` holds its row until the end (a change decided on it)."""

    async def account_by_email(self, email: str) -> Account | None: ...

    async def add_account(self, account: Account) -> None:
        """Raises EmailTakenError when the (normalised) email already has an account."""

    async def set_password_hash(
        self, user_id: str, password_hash: str, *, changed_at: datetime | None = None
    ) -> None:
        """A new hash (``changed_at``: the password itself changed, not just its hash; then
        the user's sign-ins waiting for a second factor, which passed the old one, are void)."""

    async def set_disabled(self, user_id: str, disabled_at: datetime | None) -> None: ...

    async def accounts_with_live_sessions(self, now: datetime) -> list[tuple[Account, int]]: ...

    async def set_email(self, user_id: str, email: str, *, verified_at: datetime) -> None:
        """A new (normalised) address; EmailTakenError when another account holds it."""

    async def set_email_verified(self, user_id: str, at: datetime) -> None: ...

    async def delete_account(self, user_id: str) -> None:
        """The user row and what hangs on it (sessions, links); events stay, by opaque id."""

    async def accounts_page(
        self, *, after: tuple[datetime, str] | None, email_prefix: str | None, limit: int
    ) -> list[tuple[Account, Grants]]:
        """Accounts (with their grants) in (created_at, id) order after ``after``: a keyset
        page, so a user created meanwhile never shifts one already listed onto the next."""

    async def set_app_metadata(self, user_id: str, value: dict[str, Any]) -> None: ...

    async def set_user_metadata(self, user_id: str, value: dict[str, Any]) -> None: ...

    # -- roles -----------------------------------------------------------------------------
    async def grants(self, user_id: str) -> Grants:
        """The roles the user holds and the union of their permissions."""

    async def roles(self) -> list[Role]: ...

    async def role(self, name: str) -> Role | None: ...

    async def put_role(self, role: Role) -> bool:
        """Create the role, or replace its permissions; True if it was created."""

    async def holders_grants(self, role: str) -> list[Grants]:
        """The grants of every user holding ``role``."""

    async def delete_role(self, name: str) -> list[str]:
        """Delete the role (and every grant of it); the ids of the users who held it."""

    async def grant_role(self, user_id: str, role: str, at: datetime) -> bool:
        """True if the user did not hold the role yet (the role must exist)."""

    async def revoke_role(self, user_id: str, role: str) -> bool:
        """True if the user held the role."""

    async def grant_existing_roles(
        self, user_id: str, roles: tuple[str, ...], at: datetime
    ) -> None:
        """Grant those of ``roles`` that exist (the default roles of a new user)."""

    # -- mailed links ----------------------------------------------------------------------
    async def add_link(self, link: LinkToken) -> None: ...

    async def link(self, token_hash: str) -> LinkToken | None: ...

    async def use_link(self, link_id: str, now: datetime) -> bool:
        """Mark the link used if it is still usable (one conditional update); True if so."""

    async def void_links(
        self, user_id: str, now: datetime, *, purposes: tuple[LinkPurpose, ...] | None = None
    ) -> int:
        """Mark the user's usable links (of ``purposes``, or all) used; return how many."""

    # -- second factors ------------------------------------------------------------------
    async def factors(self, user_id: str) -> list[Factor]:
        """The user's factors, confirmed or waiting to be, oldest first."""

    async def add_factor(self, factor: Factor) -> None:
        """A new factor waiting for its confirming code (the user's other unconfirmed ones
        are deleted: one enrolment at a time)."""

    async def confirm_factor(self, factor_id: str, step: int, at: datetime) -> bool:
        """Confirm the factor with a code of ``step`` (which counts as used); True if it was
        still unconfirmed."""

    async def use_factor_step(self, factor_id: str, step: int, at: datetime) -> bool:
        """Accept a code of ``step`` if the factor never accepted that step or a later one:
        one conditional update, so of concurrent submissions of a code one wins."""

    async def delete_factor(self, user_id: str, factor_id: str) -> bool:
        """Delete the user's factor (the recovery codes go with the last confirmed one)."""

    async def replace_recovery_codes(self, user_id: str, hashes: list[str], at: datetime) -> None:
        """The user's recovery codes are these (their hashes) now; the old set is gone."""

    async def use_recovery_code(self, user_id: str, code_hash: str, at: datetime) -> bool:
        """Mark the code used if it is the user's and unused (one conditional update)."""

    async def recovery_codes_left(self, user_id: str) -> int: ...

    async def add_mfa_challenge(self, challenge: MfaChallenge) -> None: ...

    async def mfa_challenge(self, token_hash: str) -> MfaChallenge | None: ...

    async def reserve_mfa_attempt(self, challenge_id: str, now: datetime) -> bool:
        """Count one attempt against the pending sign-in before its code is checked, if it is
        unused, unexpired and below its attempts (one conditional update: concurrent guesses
        cannot exceed them); False when it may not be tried again."""

    async def use_mfa_challenge(self, challenge_id: str, now: datetime) -> bool:
        """Mark the pending sign-in used if it still may be (its attempt reserved)."""

    async def recovery_code_unused(self, user_id: str, code_hash: str) -> bool:
        """Whether the user holds this recovery code, unused (a read: spending is
        :meth:`use_recovery_code`)."""

    async def set_authentication(self, session_id: str, authentication: Authentication) -> None:
        """How and when the session's user authenticated (a reauthentication)."""

    # -- passkeys --------------------------------------------------------------------------
    async def passkeys(self, user_id: str) -> list[Passkey]: ...

    async def passkey_by_credential(self, credential_id: str) -> Passkey | None: ...

    async def add_passkey(self, passkey: Passkey) -> None:
        """Raises PasskeyTakenError when the credential id is registered already."""

    async def rename_passkey(self, user_id: str, passkey_id: str, name: str) -> bool: ...

    async def delete_passkey(self, user_id: str, passkey_id: str) -> bool: ...

    async def passkey_used(
        self, passkey_id: str, sign_count: int, backed_up: bool, at: datetime
    ) -> None: ...

    async def passkey_handle(self, user_id: str) -> str | None: ...

    async def set_passkey_handle(self, user_id: str, handle: str) -> None: ...

    async def add_webauthn_challenge(self, challenge: WebauthnChallenge) -> None: ...

    async def use_webauthn_challenge(
        self, challenge_hash: str, now: datetime
    ) -> WebauthnChallenge | None:
        """The challenge, marked used, if it was unused and unexpired (a conditional update:
        of two ceremonies answering one challenge, one gets it); None otherwise."""

    # -- the mail outbox -------------------------------------------------------------------
    def add_mail(self, mail: OutgoingMail) -> None: ...

    async def mail_due(self, now: datetime) -> bool:
        """Whether any mail is due for an attempt (a cheap read before claiming)."""

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        """How many mails are neither sent nor given up, and when the oldest was queued."""

    async def claim_mail(
        self,
        now: datetime,
        *,
        lease_until: datetime,
        new_message_id: Callable[[], str],
        limit: int,
    ) -> list[QueuedMail]:
        """Due mails, each counted as one more attempt, given a Message-ID if it had none and
        leased until ``lease_until`` (others skip them: SKIP LOCKED, or the write lock)."""

    async def mail_sent(self, mail_id: int, now: datetime) -> None:
        """Sent: its payload wiped."""

    async def mail_retry(
        self, mail_id: int, at: datetime, error: str, *, uncount: bool = False
    ) -> None:
        """Due again at ``at``; ``uncount``: the attempt did not reach the relay."""

    async def mail_failed(self, mail_id: int, now: datetime, error: str) -> None: ...

    async def requeue_mail(self, mail_id: int, now: datetime) -> bool:
        """A given-up mail due again (attempts reset) while its payload is kept."""

    async def resolve_mail(self, mail_id: int, payload: str, user_id: str | None) -> None:
        """A queued job decided: its payload (now with the link) and its user."""

    async def delete_mail(self, mail_id: int) -> None:
        """A queued job that sends nothing."""

    async def drop_mail(self, user_id: str) -> int:
        """Delete the user's unsent mails (the account is being deleted)."""

    async def mails(self, limit: int) -> list[MailState]: ...

    # -- sessions --------------------------------------------------------------------------
    async def add_session(self, session: Session) -> None: ...

    async def session(self, session_id: str, *, lock: bool = False) -> Session | None: ...

    async def session_and_account(
        self, session_id: str
    ) -> tuple[Session, Account, Grants] | None: ...

    async def load_for_rotation(self, session_id: str) -> tuple[Session, bool] | None:
        """The session locked for its rotation, and whether its user is disabled."""

    async def save_rotation(self, outcome: RotationOutcome) -> None: ...

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
        """End live sessions (``only`` one, all but ``keep``, or the ``oldest`` N) and log
        them for the revocation feed, in commit order; return their ids."""

    async def end_sessions_of(
        self, user_ids: list[str], now: datetime, reason: EndReason
    ) -> list[str]:
        """End every live session of these users (one commit-ordered log write, last)."""

    async def live_session_count(self, user_id: str, now: datetime) -> int: ...

    async def live_sessions(
        self, user_id: str, now: datetime, *, current: str | None = None
    ) -> list[SessionInfo]: ...

    # -- events ----------------------------------------------------------------------------
    def add_event(self, event: NewEvent) -> None: ...

    async def events(
        self, *, user_id: str | None = None, after_id: int | None = None, limit: int = 50
    ) -> list[EventInfo]: ...

    # -- resource servers and the revocation feed ------------------------------------------
    async def add_client(self, client: ClientRecord) -> None: ...

    async def client(self, client_id: str) -> ClientRecord | None: ...

    async def clients(self) -> list[ClientRecord]: ...

    async def delete_client(self, client_id: str) -> bool: ...

    async def last_revocation(self) -> int:
        """The newest revocation log number (0 for an empty log)."""

    async def revocations(
        self, *, after: int, upto: int, since: datetime | None, limit: int
    ) -> list[RevocationEntry]: ...

    # -- housekeeping ----------------------------------------------------------------------
    async def prune(self, *, ended_before: datetime, events_before: datetime) -> tuple[int, int]:
        """Delete sessions (and revocation log lines) ended before ``ended_before`` and events
        before ``events_before``; return (sessions, events) deleted."""


class RotationWriter(Protocol):
    """A lean adapter for the refresh rotation (``Database.rotations()``)."""

    async def rotate(self, session_id: str, decide: Decide) -> Rotated:
        """Load the session, ``decide``, save a plain rotation, atomically; with the user's
        grants as the transaction saw them.

        Raises RetryableConflict when the session changed under it (run it again),
        FastPathDeclined (nothing written) for what only the unit of work writes."""


class Store(Protocol):
    """Where units of work come from."""

    def write(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work that commits on success and rolls back on any exception."""

    def read(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work for reading; it never waits for writers."""
