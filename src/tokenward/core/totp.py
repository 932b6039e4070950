"""TOTP (RFC 6238) and recovery codes: the rules of a second factor, with no I/O and no clock.

A TOTP factor is a 160-bit secret (RFC 4226 section 4 recommends 160 bits), SHA-1, 6 digits,
30-second steps: what every authenticator app reads from an ``otpauth://`` URI. A code is
accepted for the current step and the one before it (clock drift, a code typed as it turned),
nothing else, and each step at most once: :func:`matching_step` says which step a code is
for, and the caller accepts it only past the factor's last used step (stored with the factor,
written conditionally, so two submissions of one code cannot both pass).

Recovery codes are 120 random bits each (NIST SP 800-63B look-up secrets: at least 112),
shown once; only their SHA-256 is kept (their entropy makes a slow hash pointless).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import pyotp

__all__ = [
    "DIGITS",
    "RECOVERY_CODES",
    "STEP_SECONDS",
    "RecoveryCode",
    "TotpSecret",
    "hash_recovery_code",
    "matching_step",
    "new_recovery_codes",
    "step_at",
]

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1
"""Steps before the current one whose codes are still accepted (t-1): RFC 6238 section 5.2
recommends at most one."""
RECOVERY_CODES = 10
_RECOVERY_BYTES = 15  # 120 bits


@dataclass(frozen=True, slots=True)
class TotpSecret:
    """A TOTP shared secret, base32 (RFC 4648, unpadded), as authenticator apps take it."""

    base32: str

    @classmethod
    def new(cls) -> TotpSecret:
        return cls(base64.b32encode(secrets.token_bytes(20)).decode().rstrip("="))

    def uri(self, *, account: str, issuer: str) -> str:
        """The ``otpauth://totp/...`` URI (Key Uri Format) an app scans from a QR code."""
        return self._totp().provisioning_uri(name=account, issuer_name=issuer)

    def code_at(self, step: int) -> str:
        """The code of time step ``step`` (what an authenticator shows then)."""
        return self._totp().generate_otp(step)

    def _totp(self) -> pyotp.TOTP:
        return pyotp.TOTP(self.base32, digits=DIGITS, interval=STEP_SECONDS)

    def __repr__(self) -> str:
        return "TotpSecret(...)"  # never in a log or a traceback


def step_at(now: float) -> int:
    """The RFC 6238 time step of ``now`` (Unix seconds): T = floor(now / 30)."""
    return int(now // STEP_SECONDS)


def matching_step(secret: TotpSecret, code: str, now: float) -> int | None:
    """The step (current or the one before) whose code ``code`` is; None for any other code.

    Constant-time comparison; anything that is not exactly six ASCII digits (after dropping
    spaces) matches nothing."""
    candidate = code.replace(" ", "")
    if len(candidate) != DIGITS or not (candidate.isascii() and candidate.isdigit()):
        return None
    current = step_at(now)
    found = None
    for step in range(current - WINDOW, current + 1):
        if hmac.compare_digest(secret.code_at(step), candidate):
            found = step  # no early exit: the same work whichever step matched
    return found


@dataclass(frozen=True, slots=True)
class RecoveryCode:
    """A recovery code as shown once (``text``) and as stored (``hash``)."""

    text: str = field(repr=False)
    hash: str


def _normal(code: str) -> str:
    return "".join(code.split()).replace("-", "").upper()


def hash_recovery_code(code: str) -> str:
    """SHA-256 of the code as typed, dashes, spaces and case ignored."""
    return hashlib.sha256(_normal(code).encode()).hexdigest()


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[RecoveryCode]:
    """``count`` fresh codes, ``XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`` (base32, 120 bits each)."""
    codes = []
    for _ in range(count):
        raw = base64.b32encode(secrets.token_bytes(_RECOVERY_BYTES)).decode()
        text = "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))
        codes.append(RecoveryCode(text, hash_recovery_code(text)))
    return codes
