"""One-time link tokens: what a mailed link carries, and the rule for using one.

256 random bits behind a prefix that names the purpose; only a SHA-256 hash is ever stored
(the token has the entropy of a key: a slow hash would add nothing). A token is used once, is
superseded by a newer token of the same purpose for the same user, and is bound to the address
it was sent to. Pure: the time is passed in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = ["IssuedLink", "LinkPurpose", "LinkToken", "hash_link_token", "parse_link_token"]

_RANDOM_BYTES = 32
_MAX_LENGTH = 100
_BODY = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of 32 bytes, ASCII only


class LinkPurpose(StrEnum):
    """What a link does. Values are stored: never rename."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose, not a password
    CHANGE_EMAIL = "change_email"
    CANCEL_EMAIL_CHANGE = "cancel_email_change"

    @property
    def prefix(self) -> str:
        return _PREFIXES[self]


_PREFIXES = {
    LinkPurpose.VERIFY_EMAIL: "twv_",
    LinkPurpose.RESET_PASSWORD: "twp_",
    LinkPurpose.CHANGE_EMAIL: "twe_",
    LinkPurpose.CANCEL_EMAIL_CHANGE: "twx_",  # twc_ names resource servers' client ids
}


def hash_link_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 of the whole string, prefix included."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_link_token(text: object, purpose: LinkPurpose) -> str | None:
    """The token if ``text`` looks like one of ``purpose`` (prefix, length, alphabet), else None.

    A malformed token is refused before any lookup, as an unknown one is refused after it."""
    if not isinstance(text, str) or len(text) > _MAX_LENGTH:
        return None
    if not text.startswith(purpose.prefix):
        return None
    if _BODY.fullmatch(text[len(purpose.prefix) :]) is None:
        return None
    return text


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A new token: ``token`` goes into the mail only; ``record`` is what is stored."""

    token: str
    record: LinkToken


@dataclass(frozen=True, slots=True)
class LinkToken:
    """A stored link token (its hash, never the token)."""

    id: str
    user_id: str
    purpose: LinkPurpose
    token_hash: str
    email: str
    """The address the link was sent to (for a change: the new address); the application
    stores it sealed and unseals it when the link is used."""
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    @classmethod
    def issue(
        cls,
        *,
        id: str,
        user_id: str,
        purpose: LinkPurpose,
        email: str,
        now: datetime,
        ttl: timedelta,
    ) -> IssuedLink:
        token = purpose.prefix + secrets.token_urlsafe(_RANDOM_BYTES)
        record = cls(
            id=id,
            user_id=user_id,
            purpose=purpose,
            token_hash=hash_link_token(token),
            email=email,
            created_at=now,
            expires_at=now + ttl,
        )
        return IssuedLink(token, record)

    def usable(self, now: datetime) -> bool:
        """Not used (or superseded, or voided) and not expired."""
        return self.used_at is None and now < self.expires_at

    def use(self, now: datetime) -> LinkToken:
        return replace(self, used_at=now)
