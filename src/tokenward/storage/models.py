"""Tables. Times are stored in UTC; no secret is ever stored in the clear."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "ClientRow",
    "EventRow",
    "LinkTokenRow",
    "MfaChallengeRow",
    "MfaFactorRow",
    "OutboxRow",
    "PasskeyRow",
    "RecoveryCodeRow",
    "RevocationRow",
    "RoleRow",
    "SessionRow",
    "SigningKeyRow",
    "UTCDateTime",
    "UserRoleRow",
    "UserRow",
    "WebauthnChallengeRow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite keeps no zone: store naive UTC there so that comparisons stay textual and right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}  # noqa: RUF012


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    """Normalised: NFKC, trimmed, lower-cased."""
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    password_changed_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    email_verified_at: Mapped[datetime | None] = mapped_column(default=None)
    app_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """Set by operators and the admin API only (core.metadata)."""
    user_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    held_roles: Mapped[str | None] = mapped_column(Text, default=None)
    """The user's roles, space-separated: what ``user_roles`` says, kept here by every change
    to it (storage.sql ``_sync_grants``) so that a refresh reads them with the user's row."""
    held_permissions: Mapped[str | None] = mapped_column(Text, default=None)
    """Those roles' permissions, space-separated (duplicates possible: Grants.parse drops
    them)."""
    passkey_handle: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    """The WebAuthn user handle (random, never the email), made with the first passkey."""


class RoleRow(Base):
    """A role and the permissions it grants (space-separated: core.roles forbids spaces)."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    permissions: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class UserRoleRow(Base):
    """A role held by a user; goes with either."""

    __tablename__ = "user_roles"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(
        ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True, index=True
    )
    granted_at: Mapped[datetime]


class SessionRow(Base):
    """One login. Its refresh token is an HMAC over (id, generation): only the counter is kept."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    """Idle timeout: pushed out by each rotation, never past ``max_expires_at``."""
    max_expires_at: Mapped[datetime]
    """Absolute end of the session."""
    revoked_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ip: Mapped[str | None] = mapped_column(String(45), default=None)
    created_user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    last_ip: Mapped[str | None] = mapped_column(String(45), default=None)
    last_user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    amr: Mapped[str | None] = mapped_column(String(64), default=None)
    """How the user authenticated (RFC 8176 values, space-separated; None: a password)."""
    auth_time: Mapped[datetime | None] = mapped_column(default=None)
    """When (None: at ``created_at``); a reauthentication moves it."""
    mfa_time: Mapped[datetime | None] = mapped_column(default=None)
    """When a second factor was last used in the session (None: never)."""


class MfaFactorRow(Base):
    """A second factor. The TOTP secret is sealed under the server secret (Fernet)."""

    __tablename__ = "mfa_factors"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The newest TOTP time step accepted: a code is accepted once (a conditional write)."""
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class RecoveryCodeRow(Base):
    """A recovery code's SHA-256 (never the code); used once."""

    __tablename__ = "recovery_codes"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class MfaChallengeRow(Base):
    """A sign-in waiting for its second factor: only the ``mfa_token``'s SHA-256 is kept."""

    __tablename__ = "mfa_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    enrolling: Mapped[bool] = mapped_column(Boolean, default=False)


class PasskeyRow(Base):
    """A passkey: its credential id and COSE public key (public data), the signature counter."""

    __tablename__ = "passkeys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    """base64url of the credential id (at most 1023 bytes)."""
    public_key: Mapped[str] = mapped_column(Text)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(64))
    transports: Mapped[str] = mapped_column(String(128), default="")
    aaguid: Mapped[str] = mapped_column(String(36), default="")
    backup_eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class WebauthnChallengeRow(Base):
    """A WebAuthn ceremony's challenge: only its SHA-256, single use."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    challenge_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str | None] = mapped_column(String(36), default=None)
    mfa_challenge_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class RevocationRow(Base):
    """The revocation log: one row per ended session, numbered in commit order.

    Resource servers follow it by ``id`` (the feed's cursor). Ids are taken while the writing
    transaction holds the log's lock (PostgreSQL) or SQLite's write lock, so a higher id is
    never visible before a lower one: a reader that saw id N has seen every id below it.
    """

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36))
    revoked_at: Mapped[datetime] = mapped_column(index=True)


class EventRow(Base):
    """A security event (audit trail). ``detail`` never holds a secret."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_user_at", "user_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    type: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(36), default=None)
    session_id: Mapped[str | None] = mapped_column(String(36), default=None)
    ip: Mapped[str | None] = mapped_column(String(45), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class SigningKeyRow(Base):
    """A signing key; the private key is encrypted under the server secret (Fernet)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    private_key: Mapped[str] = mapped_column(Text)
    """Fernet token of the PKCS#8 PEM."""
    created_at: Mapped[datetime]
    activates_at: Mapped[datetime]
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class ClientRow(Base):
    """A resource server allowed to introspect, revoke and read the revocation feed."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of a 256-bit random secret: a slow hash adds nothing to that much entropy."""
    created_at: Mapped[datetime]
    scopes: Mapped[str] = mapped_column(String(255), default="", server_default="")
    """Admin API scopes, space-separated (empty: a resource server only)."""


class LinkTokenRow(Base):
    """A mailed link's token: only its SHA-256 hash is kept (core.onetime)."""

    __tablename__ = "link_tokens"
    __table_args__ = (Index("ix_link_tokens_user_purpose", "user_id", "purpose"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(Text)
    """The address the link was sent to (an email change: the new address), sealed under the
    server secret."""
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    """Used, superseded or voided."""


class OutboxRow(Base):
    """A queued mail. ``payload`` (recipient and template values) is sealed under the server
    secret and wiped once the mail is sent."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime]
    template: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    payload: Mapped[str | None] = mapped_column(Text, default=None)
    message_id: Mapped[str | None] = mapped_column(String(128), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
