"""Passkeys (WebAuthn): what is stored of one, the ceremonies' challenges, and the rules tokenward
adds to the WebAuthn verification (which py_webauthn does): names, the sign counter, and what a
passkey says in ``amr``.

Pure: no I/O, no settings, no clock reads.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tokenward.core.mfa import Amr

__all__ = [
    "CHALLENGE_BYTES",
    "MAX_NAME_LENGTH",
    "CounterRegression",
    "Passkey",
    "PasskeyMode",
    "WebauthnChallenge",
    "WebauthnPurpose",
    "check_passkey_name",
    "counter_regressed",
    "hash_challenge",
    "new_user_handle",
]

CHALLENGE_BYTES = 32
MAX_NAME_LENGTH = 64


class PasskeyMode(StrEnum):
    """``TOKENWARD_PASSKEYS``."""

    OFF = "off"
    SECOND_FACTOR = "second-factor"
    PASSWORDLESS = "passwordless"


class CounterRegression(StrEnum):
    """``TOKENWARD_WEBAUTHN_COUNTER_REGRESSION``: what a signature counter that did not move
    forward does (synced passkeys report 0 always, which is no regression)."""

    WARN = "warn"
    REJECT = "reject"


class WebauthnPurpose(StrEnum):
    """What a ceremony's challenge is for. Values are stored: never rename."""

    REGISTER = "register"
    LOGIN = "login"
    SECOND_FACTOR = "mfa"
    REAUTHENTICATE = "reauthenticate"


def new_user_handle() -> str:
    """A user's WebAuthn user handle: 32 random bytes, base64url (never the email or the id)."""
    return secrets.token_urlsafe(32)


def hash_challenge(challenge: bytes) -> str:
    """The stored form of a challenge (it is random: SHA-256 is enough)."""
    return hashlib.sha256(challenge).hexdigest()


def check_passkey_name(name: str) -> str:
    """The name trimmed; ValueError for an empty one, one too long, or one with controls."""
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH or not cleaned.isprintable():
        raise ValueError(f"a passkey's name is 1 to {MAX_NAME_LENGTH} printable characters")
    return cleaned


def counter_regressed(stored: int, presented: int) -> bool:
    """WebAuthn L3 6.1.1: a counter that did not increase, where either is non-zero, may mean a
    cloned authenticator (both zero: the authenticator keeps no counter, as synced ones)."""
    return (stored > 0 or presented > 0) and presented <= stored


@dataclass(frozen=True, slots=True)
class Passkey:
    """A registered passkey: its credential id and COSE public key (base64url; public data),
    the signature counter, and whether it is synced (backup-eligible: a multi-device
    credential) and backed up now."""

    id: str
    user_id: str
    credential_id: str
    public_key: str
    sign_count: int
    name: str
    created_at: datetime
    backup_eligible: bool
    backed_up: bool
    transports: tuple[str, ...] = ()
    aaguid: str = ""
    last_used_at: datetime | None = None

    @property
    def amr(self) -> Amr:
        """RFC 8176: a synced passkey's key lives in software (``swk``), a device-bound one in
        hardware (``hwk``)."""
        return Amr.SWK if self.backup_eligible else Amr.HWK


@dataclass(frozen=True, slots=True)
class WebauthnChallenge:
    """A ceremony's challenge as stored (its hash), single use and short-lived."""

    id: str
    purpose: WebauthnPurpose
    challenge_hash: str
    created_at: datetime
    expires_at: datetime
    user_id: str | None = None
    mfa_challenge_id: str | None = None
    used_at: datetime | None = None

    @classmethod
    def issue(
        cls,
        purpose: WebauthnPurpose,
        now: datetime,
        ttl: timedelta,
        *,
        user_id: str | None = None,
        mfa_challenge_id: str | None = None,
    ) -> tuple[bytes, WebauthnChallenge]:
        """A new random challenge (for the options) and its record."""
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        record = cls(
            id=str(uuid.uuid4()),
            purpose=purpose,
            challenge_hash=hash_challenge(challenge),
            created_at=now,
            expires_at=now + ttl,
            user_id=user_id,
            mfa_challenge_id=mfa_challenge_id,
        )
        return challenge, record
