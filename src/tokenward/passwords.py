"""Password policy (NIST SP 800-63B rev. 4) and hashing (argon2id, legacy bcrypt verify)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from tokenward.exceptions import PasswordPolicyError

__all__ = [
    "PASSWORD_MAX_LENGTH",
    "PasswordHasher",
    "PasswordPolicy",
    "normalize_password",
]

PASSWORD_MAX_LENGTH = 128
"""Longest password accepted, in characters; longer ones are refused before any hashing."""


def normalize_password(password: str) -> str:
    """NFKC, so that the same password typed on two keyboards hashes the same (SP 800-63B)."""
    return unicodedata.normalize("NFKC", password)


@cache
def _blocklist() -> frozenset[str]:
    text = resources.files("tokenward.data").joinpath("common-passwords.txt").read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line.casefold() for line in lines if line and not line.startswith("#"))


@dataclass(frozen=True)
class PasswordPolicy:
    """Length rules and a blocklist; no composition rules, as SP 800-63B rev. 4 asks."""

    min_length: int = 15
    max_length: int = PASSWORD_MAX_LENGTH

    def check_length_cap(self, password: str) -> None:
        """Refuse an over-long password before anything hashes it (no hash-cost DoS)."""
        if len(password) > self.max_length:
            raise PasswordPolicyError(
                "password_too_long", f"password must be at most {self.max_length} characters"
            )

    def check(self, password: str, *, email: str = "") -> None:
        """Raise :class:`PasswordPolicyError` naming the first rule ``password`` breaks."""
        if len(password) < self.min_length:
            raise PasswordPolicyError(
                "password_too_short", f"password must be at least {self.min_length} characters"
            )
        self.check_length_cap(password)
        folded = password.casefold()
        if folded in _blocklist() or len(set(folded)) < 4:
            raise PasswordPolicyError(
                "password_common", "password is too common or predictable; choose another"
            )
        local_part = email.partition("@")[0].casefold()
        if folded == email.casefold() or (len(local_part) >= 4 and folded == local_part * 2):
            raise PasswordPolicyError(
                "password_matches_email", "password must not be derived from the email address"
            )


class PasswordHasher:
    """argon2id for every new hash; bcrypt hashes (as the tutorial made them) still verify.

    ``verify`` never raises on a foreign or corrupt hash, and a bcrypt hash is never checked
    against a password longer than 72 bytes (bcrypt would silently ignore the rest).
    """

    def __init__(self, argon2: Argon2Hasher | None = None) -> None:
        # argon2-cffi's defaults are RFC 9106's low-memory profile (t=3, m=64 MiB, p=4).
        self._hash = PasswordHash((argon2 or Argon2Hasher(), BcryptHasher()))
        # Verified against for unknown emails so that they cost what a wrong password costs.
        self._dummy_hash = self._hash.hash("tokenward-dummy-password-for-timing")

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """Return ``(matches, new_hash)``; ``new_hash`` is set when the hash should be upgraded.

        ``password_hash=None`` (an unknown user) runs a dummy verification and returns False.
        """
        if password_hash is None:
            self._hash.verify(password, self._dummy_hash)
            return False, None
        if BcryptHasher.identify(password_hash) and len(password.encode()) > 72:
            self._hash.verify(password, self._dummy_hash)
            return False, None
        try:
            return self._hash.verify_and_update(password, password_hash)
        except (UnknownHashError, ValueError):
            return False, None

    @staticmethod
    def is_supported_hash(password_hash: str) -> bool:
        """True for argon2 and bcrypt hashes, the ones ``users import`` accepts."""
        return Argon2Hasher.identify(password_hash) or BcryptHasher.identify(password_hash)
