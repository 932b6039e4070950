"""How a session was authenticated, and the pending state between a password and a second factor.

Pure: no I/O, no settings, no clock reads. :class:`Authentication` is what a session keeps and
every access token of it carries (RFC 8176 ``amr``, ``acr``, OpenID ``auth_time``);
:class:`MfaChallenge` is a sign-in that passed its password and waits for its second factor:
its token is random, only its hash is stored, it lives minutes and dies after a few failures.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "AAL2_REAUTH_WINDOW",
    "CHALLENGE_ATTEMPTS",
    "CHALLENGE_TTL",
    "ENROLMENT_TTL",
    "MAX_FACTORS",
    "Acr",
    "Amr",
    "Authentication",
    "Factor",
    "FactorType",
    "IssuedChallenge",
    "MfaChallenge",
    "MfaMethod",
    "MfaMode",
    "hash_challenge_token",
    "parse_challenge_token",
]

CHALLENGE_TTL = timedelta(minutes=5)
CHALLENGE_ATTEMPTS = 5
"""Wrong codes a pending sign-in survives: the next one ends it."""
MAX_FACTORS = 5
"""Confirmed TOTP factors a user may hold (a phone and its replacement, a spare)."""

_PREFIX = "twm_"
_BODY = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of 32 bytes


class MfaMode(StrEnum):
    """``TOKENWARD_MFA``: whether a second factor is off, up to each user, or required."""

    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"


class Amr(StrEnum):
    """Authentication method references (RFC 8176) tokenward puts in ``amr``."""

    PWD = "pwd"  # noqa: S105 - a method's name, not a password
    OTP = "otp"
    """A TOTP code, or a recovery code (a look-up secret: a one-time password printed ahead)."""
    MFA = "mfa"
    HWK = "hwk"
    """A passkey bound to its device (its key in hardware)."""
    SWK = "swk"
    """A synced passkey (its key in software, copied between the user's devices)."""


class Acr(StrEnum):
    """Authentication context classes: NIST SP 800-63B assurance levels, as ``acr`` says them."""

    AAL1 = "aal1"
    AAL2 = "aal2"


class MfaMethod(StrEnum):
    """What a second-factor submission is. Values are in the API: never rename."""

    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"
    WEBAUTHN = "webauthn"
    """A passkey (docs/passkeys.md)."""


class FactorType(StrEnum):
    """A stored factor's type. Values are stored: never rename."""

    TOTP = "totp"


AAL2_REAUTH_WINDOW = timedelta(hours=12)
"""How long after its second factor a session may be reauthenticated with a password alone and
stay aal2 (NIST SP 800-63B: an AAL2 session lasts at most 12 hours before both factors are
asked again)."""


@dataclass(frozen=True, slots=True)
class Authentication:
    """How and when a session's user last proved who they are: one password, or a password and
    a second factor (``mfa``). Refreshes carry it unchanged; a reauthentication renews it.
    ``second_factor_time`` is when a second factor was last used in the session (None: never)."""

    methods: tuple[Amr, ...]
    time: datetime
    second_factor_time: datetime | None = None

    @classmethod
    def password(cls, now: datetime) -> Authentication:
        return cls((Amr.PWD,), now)

    @classmethod
    def with_second_factor(cls, now: datetime) -> Authentication:
        return cls((Amr.PWD, Amr.OTP, Amr.MFA), now, now)

    @classmethod
    def with_passkey(cls, now: datetime, key: Amr, *, after_password: bool) -> Authentication:
        """A passkey with user verification: multi-factor by itself (the device and the
        user's PIN or biometric), or the second factor after a password."""
        methods = (Amr.PWD, key, Amr.MFA) if after_password else (key, Amr.MFA)
        return cls(methods, now, now)

    @property
    def acr(self) -> Acr:
        return Acr.AAL2 if Amr.MFA in self.methods else Acr.AAL1

    def renewed(self, now: datetime, *, second_factor: bool) -> Authentication:
        """After a reauthentication at ``now``. A second factor: aal2 (the session's password
        and this factor). A password: the level stays aal2 only within AAL2_REAUTH_WINDOW of
        the session's last second factor, else it is a password sign-in again (aal1)."""
        if second_factor:
            return Authentication.with_second_factor(now)
        last = self.second_factor_time
        if Amr.MFA in self.methods and last is not None and now - last <= AAL2_REAUTH_WINDOW:
            return replace(self, time=now)
        return Authentication.password(now)

    def recent(self, now: datetime, max_age: timedelta) -> bool:
        return now - self.time <= max_age

    def claims(self) -> dict[str, Any]:
        """``amr``, ``acr`` and ``auth_time``, as an access token carries them."""
        return {
            "amr": [m.value for m in self.methods],
            "acr": self.acr.value,
            "auth_time": int(self.time.timestamp()),
        }

    def stored(self) -> str:
        """``sessions.amr``: the methods, space-separated."""
        return " ".join(m.value for m in self.methods)

    @classmethod
    def load(
        cls,
        amr: str | None,
        time: datetime | None,
        second_factor_time: datetime | None = None,
        *,
        created_at: datetime,
    ) -> Authentication:
        """From a session row (a row older than the columns: a password at its creation).
        A method this version does not know is left out: never a level it cannot vouch for."""
        known = {m.value for m in Amr}
        methods = tuple(Amr(m) for m in (amr or "").split() if m in known) or (Amr.PWD,)
        return cls(methods, time or created_at, second_factor_time)


def hash_challenge_token(token: str) -> str:
    """The stored form of an ``mfa_token``: hex SHA-256 (256 random bits need no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_challenge_token(text: object) -> str | None:
    """The token if ``text`` looks like an ``mfa_token`` (prefix, length, alphabet), else None."""
    if not isinstance(text, str) or len(text) != len(_PREFIX) + 43:
        return None
    if not text.startswith(_PREFIX) or _BODY.fullmatch(text[len(_PREFIX) :]) is None:
        return None
    return text


@dataclass(frozen=True, slots=True)
class IssuedChallenge:
    """A new pending sign-in: ``token`` goes to the client only; ``record`` is stored."""

    token: str
    record: MfaChallenge


@dataclass(frozen=True, slots=True)
class MfaChallenge:
    """A sign-in whose password was right, waiting for the second factor (or, when the server
    requires one, for the user's first factor to be enrolled: ``enrolling``)."""

    id: str
    user_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    used_at: datetime | None = None
    enrolling: bool = False

    @classmethod
    def issue(cls, user_id: str, now: datetime, *, enrolling: bool = False) -> IssuedChallenge:
        token = _PREFIX + secrets.token_urlsafe(32)
        record = cls(
            id=str(uuid.uuid4()),
            user_id=user_id,
            token_hash=hash_challenge_token(token),
            created_at=now,
            expires_at=now + CHALLENGE_TTL,
            enrolling=enrolling,
        )
        return IssuedChallenge(token, record)

    def usable(self, now: datetime) -> bool:
        """Not used, not expired, and not past its failures."""
        return self.used_at is None and now < self.expires_at and self.attempts < CHALLENGE_ATTEMPTS

    @property
    def expires_in(self) -> int:
        return int((self.expires_at - self.created_at).total_seconds())


ENROLMENT_TTL = timedelta(minutes=10)
"""How long a new factor waits for its confirming code."""


@dataclass(frozen=True, slots=True)
class Factor:
    """A second factor as stored: ``secret`` is sealed (the application seals and unseals it
    under the server secret); ``last_used_step`` is the newest TOTP step accepted, so that a
    code is accepted once."""

    id: str
    user_id: str
    type: FactorType
    secret: str
    created_at: datetime
    confirmed_at: datetime | None = None
    last_used_step: int | None = None
    last_used_at: datetime | None = None

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None

    def confirmable(self, now: datetime) -> bool:
        """Not confirmed yet, and enrolled recently enough to be."""
        return self.confirmed_at is None and now < self.created_at + ENROLMENT_TTL

    def accepts_step(self, step: int) -> bool:
        """A code of ``step`` may be used: the factor never accepted that step or a later one."""
        return self.last_used_step is None or step > self.last_used_step
