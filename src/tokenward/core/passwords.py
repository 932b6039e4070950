"""Password policy (NIST SP 800-63B rev. 4) and hashing (argon2id, legacy bcrypt verify)."""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from tokenward.exceptions import PasswordPolicyError

__all__ = [
    "PASSWORD_MAX_LENGTH",
    "ImportedHashError",
    "PasswordHasher",
    "PasswordPolicy",
    "check_imported_hash",
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


BCRYPT_COSTS = range(10, 13)
"""bcrypt work factors ``users import`` takes: 10 (the tutorial's) to 12. Below, too weak;
above, one login holds a hash slot for a second or more (and answers slower than others)."""
ARGON2_MIN_MEMORY_KIB = 7168
ARGON2_MIN_WORK = 35_840
"""Memory (KiB) times passes: OWASP's least argon2id profiles (m=7 MiB t=5 ... m=46 MiB t=1)."""
ARGON2_MAX_WORK = 786_432
"""Four times the default (m=64 MiB, t=3): a verification far above it is a denial of service."""
ARGON2_MAX_PARALLELISM = 16
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


class ImportedHashError(ValueError):
    """An imported password hash that tokenward will not take; the message says why."""


def check_imported_hash(password_hash: str) -> None:
    """Raise :class:`ImportedHashError` unless ``password_hash`` verifies, safely and in time.

    bcrypt (``$2a$``/``$2b$``/``$2y$``) with a cost in :data:`BCRYPT_COSTS`, or argon2id/argon2i
    (v=19) with a salt, a digest of 16 bytes or more, and a work factor within bounds. Only
    the format is read: checking a million records costs no hash.
    """
    if password_hash.startswith("$2"):
        match = _BCRYPT.fullmatch(password_hash)
        if match is None:
            raise ImportedHashError("not a well-formed bcrypt hash")
        cost = int(match[1])
        if cost not in BCRYPT_COSTS:
            raise ImportedHashError(
                f"bcrypt cost {cost} is outside {BCRYPT_COSTS.start}..{BCRYPT_COSTS.stop - 1}"
            )
        return
    if not password_hash.startswith("$argon2"):
        raise ImportedHashError("not an argon2 or bcrypt hash")
    try:
        params = extract_parameters(password_hash)
    except (InvalidHashError, ValueError):
        raise ImportedHashError("not a well-formed argon2 hash (salt and digest needed)") from None
    if params.type is Type.D:
        raise ImportedHashError("argon2d is not for passwords; argon2id or argon2i only")
    if params.version != 19:
        raise ImportedHashError(f"argon2 version {params.version} is not 19")
    if params.salt_len < 8 or params.hash_len < 16:
        raise ImportedHashError("argon2 salt under 8 bytes or digest under 16 bytes")
    work = params.memory_cost * params.time_cost
    if params.memory_cost < ARGON2_MIN_MEMORY_KIB or work < ARGON2_MIN_WORK:
        raise ImportedHashError("argon2 parameters too weak")
    if work > ARGON2_MAX_WORK or params.parallelism > ARGON2_MAX_PARALLELISM:
        raise ImportedHashError("argon2 parameters too costly to verify")


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
        started = time.perf_counter()
        self._hash.verify("tokenward-dummy-password-for-timing", self._dummy_hash)
        self.floor = time.perf_counter() - started
        """Seconds every verification lasts at least: what one at today's parameters takes now.
        A cheaper legacy hash (bcrypt 10: a third of argon2id's time) waits out the rest, so
        an imported account answers no faster than an unknown email. Follows the machine's
        load: each verification at today's parameters moves it a fifth of the way."""

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """Return ``(matches, new_hash)``; ``new_hash`` is set when the hash should be upgraded.

        ``password_hash=None`` (an unknown user) runs a dummy verification and returns False.
        Lasts at least :attr:`floor`, whatever the hash.
        """
        started = time.perf_counter()
        current = False
        try:
            matches, new_hash, current = self._verify(password, password_hash)
            return matches, new_hash
        finally:
            elapsed = time.perf_counter() - started
            if current:
                self.floor += (elapsed - self.floor) / 5
            elif elapsed < self.floor:
                time.sleep(self.floor - elapsed)

    def _verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None, bool]:
        """(matches, new hash, whether this was one verification at today's parameters)."""
        if password_hash is None:
            self._hash.verify(password, self._dummy_hash)
            return False, None, True
        if BcryptHasher.identify(password_hash) and len(password.encode()) > 72:
            self._hash.verify(password, self._dummy_hash)
            return False, None, True
        try:
            matches, new_hash = self._hash.verify_and_update(password, password_hash)
        except Exception:  # a corrupt stored hash is a wrong password, never a 500
            return False, None, False
        current = new_hash is None and password_hash.startswith("$argon2")
        return matches, new_hash, current
