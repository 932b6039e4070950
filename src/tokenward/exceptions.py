"""The one exception hierarchy of tokenward.

TokenwardError
├── ConfigError                 a setting is missing or invalid
├── TokenError                  anything wrong with a presented token (no oracle: one reason
│   │                           string for logs, one answer for clients)
│   ├── RefreshTokenReusedError rotation saw a refresh token that was already rotated out
│   └── SessionEndedError       the token's session was revoked, expired or its user disabled
├── AuthenticationError         wrong email or password (never says which)
├── PasswordPolicyError         a new password breaks a rule; carries the rule's name
├── InvalidEmailError           an email address that is not one
├── EmailTakenError             registration of an email that already has an account
├── UnknownUserError            an operator named a user that does not exist
├── KeyRotationError            a key operation was refused
├── SchemaVersionError          the database was migrated by a newer tokenward
└── UnavailableError            the database or Redis cannot be reached (or stays busy)
"""

from __future__ import annotations


class TokenwardError(Exception):
    """Root of every error tokenward raises on purpose."""


class ConfigError(TokenwardError):
    """A setting is missing or invalid; the message names the variable."""


class TokenError(TokenwardError):
    """A presented access or refresh token is not acceptable.

    ``reason`` is for logs and tests; clients only ever see ``invalid_token``.
    """

    def __init__(self, reason: str = "invalid token") -> None:
        super().__init__(reason)
        self.reason = reason


class RefreshTokenReusedError(TokenError):
    """A rotated-out refresh token came back after the reuse interval: the session is ended."""


class SessionEndedError(TokenError):
    """The token's session was revoked or has expired, or its user is disabled."""


class AuthenticationError(TokenwardError):
    """Unknown email or wrong password; deliberately the same error for both."""


class PasswordPolicyError(TokenwardError):
    """A new password breaks the policy. ``rule`` names the rule for the client."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class InvalidEmailError(TokenwardError):
    """The email address is not valid."""


class EmailTakenError(TokenwardError):
    """An account with this (normalised) email already exists."""


class RateLimitedError(TokenwardError):
    """Too many requests for one of the rate limits; try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.retry_after = retry_after


class UnknownUserError(TokenwardError):
    """No user has this email."""


class KeyRotationError(TokenwardError):
    """A key operation was refused (unknown key, or it would leave nothing to sign with)."""


class UnavailableError(TokenwardError):
    """A backing service (``dependency``: "database" or "redis") is unreachable or busy.

    Transient by nature: the request changed nothing and may be retried; the web layer answers
    503 with Retry-After.
    """

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable ({reason})")
        self.dependency = dependency
        self.reason = reason


class SchemaVersionError(TokenwardError):
    """The database is at a migration this version does not ship (a newer tokenward made it)."""
