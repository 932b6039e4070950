"""Users: email normalisation (the rest of a user is plain data in the store)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from tokenward.exceptions import InvalidEmailError

__all__ = [
    "MAX_EMAIL_LENGTH",
    "NO_PASSWORD",
    "Account",
    "User",
    "account_key",
    "normalize_email",
]

MAX_EMAIL_LENGTH = 254
"""RFC 5321's limit on a forward path, less the angle brackets."""


NO_PASSWORD = "!"  # noqa: S105 - a marker, not a password
"""The password hash of an account created without a password (an admin's invitation): no
password verifies against it (core.passwords treats it as a corrupt hash: a wrong password)."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    created_at: datetime
    email_verified: bool = False
    app_metadata: Mapping[str, Any] = field(default_factory=dict)
    user_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Account:
    """A user as storage keeps it: with the password hash and the disabled mark."""

    id: str
    email: str
    """Normalised (see :func:`normalize_email`)."""
    password_hash: str
    created_at: datetime
    password_changed_at: datetime
    disabled_at: datetime | None = None
    email_verified_at: datetime | None = None
    app_metadata: Mapping[str, Any] = field(default_factory=dict)
    """Set by operators and the admin API only (core.metadata)."""
    user_metadata: Mapping[str, Any] = field(default_factory=dict)
    """The user's own profile data: never trusted for authorization."""

    @classmethod
    def new(cls, *, id: str, email: str, password_hash: str, now: datetime) -> Account:
        """A new, enabled account whose password was set ``now``."""
        return cls(id, email, password_hash, created_at=now, password_changed_at=now)

    @property
    def user(self) -> User:
        return User(
            id=self.id,
            email=self.email,
            created_at=self.created_at,
            email_verified=self.email_verified_at is not None,
            app_metadata=self.app_metadata,
            user_metadata=self.user_metadata,
        )

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


def normalize_email(email: str) -> str:
    """NFKC, trimmed, syntax-checked (no DNS), lower-cased: the one form we store and compare."""
    candidate = unicodedata.normalize("NFKC", email).strip()
    if not candidate or len(candidate) > MAX_EMAIL_LENGTH:
        raise InvalidEmailError("email must be a valid address of at most 254 characters")
    try:
        normalized = validate_email(candidate, check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvalidEmailError("email is not a valid address") from None
    return normalized.lower()


def account_key(email: str) -> str:
    """The key rate limits count an account under: its normalised email, valid or not.

    So that ``Ada@Example.com`` and `` ada@example.com `` share one counter.
    """
    try:
        return normalize_email(email)
    except InvalidEmailError:
        return unicodedata.normalize("NFKC", email).strip().lower()[: MAX_EMAIL_LENGTH + 1]
