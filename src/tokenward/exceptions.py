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
├── EmailNotVerifiedError       the password was right, but the address is not verified yet
├── LinkInvalidError            a mailed link that is unknown, used, superseded or expired
├── InvalidRoleError            a role name or a permission that is not one
├── InvalidMetadataError        app_metadata or user_metadata that is not a small JSON object
├── UnknownUserError            an operator named a user that does not exist
│   └── UnknownRoleError        ... or a role that does not exist (or a user does not hold)
├── ClientAuthenticationError   admin API: missing or wrong client credentials
├── InsufficientScopeError      admin API: the client lacks the scope the operation needs
├── InvalidCursorError          a paging cursor that is not one this server handed out
├── ClaimsUnavailableError      the claims hook raised, timed out or answered unusably
├── MfaFailedError              a second factor (or the pending sign-in) was not accepted
├── InvalidMfaCodeError         the code that should confirm a new factor is not its code
├── StepUpRequiredError         the session's authentication is too old or too weak (RFC 9470)
├── UnknownFactorError          the user has no factor of this id
├── FactorLimitError            the user holds as many factors as allowed
├── PasskeyFailedError          a passkey sign-in was not accepted (one answer for every reason)
├── InvalidPasskeyError         a passkey registration that does not verify
│   └── PasskeyTakenError       ... or whose credential is registered already
├── KeyRotationError            a key operation was refused
├── SchemaVersionError          the database was migrated by a newer tokenward
├── UnavailableError            the database or Redis cannot be reached (or stays busy)
└── VerificationError           (tokenward.verify) a resource server refused a token

Each class carries its HTTP answer as data: ``status``, ``problem`` (the stable
``urn:tokenward:problem:<problem>`` type), ``title``, and what a client may read of it
(:meth:`~TokenwardError.public_detail`, headers, extra members). One handler in the web layer
turns any of them into problem+json, and the OpenAPI document declares them from the same
classes. Nothing here imports anything: the resource-server library (the base install) roots
its own errors here too.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TokenwardError(Exception):
    """Root of every error tokenward raises on purpose."""

    status: ClassVar[int] = 500
    problem: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def public_detail(self) -> str | None:
        """What the client may read; by default nothing (the message is for logs)."""
        return None

    def headers(self) -> dict[str, str]:
        return {}

    def extra(self) -> dict[str, Any]:
        """Further problem members (RFC 9457 extensions)."""
        return {}


class ConfigError(TokenwardError):
    """A setting is missing or invalid; the message names the variable."""


class TokenError(TokenwardError):
    """A presented access or refresh token is not acceptable.

    ``reason`` is for logs and tests; clients only ever see ``invalid_token``.
    """

    status = 401
    problem = "invalid-token"
    title = "Invalid token"

    def public_detail(self) -> str:
        return "the token is invalid or has expired"  # one answer for every reason: no oracle

    def __init__(self, reason: str = "invalid token") -> None:
        super().__init__(reason)
        self.reason = reason


class RefreshTokenReusedError(TokenError):
    """A rotated-out refresh token came back after the reuse interval: the session is ended."""


class SessionEndedError(TokenError):
    """The token's session was revoked or has expired, or its user is disabled."""


class AuthenticationError(TokenwardError):
    """Unknown email or wrong password; deliberately the same error for both."""

    status = 401
    problem = "invalid-credentials"
    title = "Invalid credentials"

    def public_detail(self) -> str:
        return "email or password is incorrect"


class PasswordPolicyError(TokenwardError):
    """A new password breaks the policy. ``rule`` names the rule for the client."""

    status = 422
    problem = "weak-password"
    title = "Password rejected"

    def public_detail(self) -> str:
        return str(self)

    def extra(self) -> dict[str, Any]:
        return {"rule": self.rule}

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class InvalidEmailError(TokenwardError):
    """The email address is not valid."""

    status = 422
    problem = "invalid-email"
    title = "Invalid email"

    def public_detail(self) -> str:
        return str(self)

    def extra(self) -> dict[str, Any]:
        return {"rule": "email_invalid"}


class EmailTakenError(TokenwardError):
    """An account with this (normalised) email already exists."""

    status = 409
    problem = "email-taken"
    title = "Email already registered"

    def public_detail(self) -> str:
        return str(self)


class EmailNotVerifiedError(TokenwardError):
    """Sign-in refused until the address is verified (``TOKENWARD_EMAIL_VERIFICATION=required``).

    Raised only after the password verified: to anyone else the answer stays the one 401."""

    status = 403
    problem = "email-not-verified"
    title = "Email not verified"

    def public_detail(self) -> str:
        return "confirm your email address with the link we sent, or ask for a new one"


class LinkInvalidError(TokenwardError):
    """A mailed link's token that is unknown, used, superseded or expired: one answer for all."""

    status = 400
    problem = "link-invalid"
    title = "Invalid or expired link"

    def public_detail(self) -> str:
        return "this link is invalid or has expired; ask for a new one"


class RateLimitedError(TokenwardError):
    """Too many requests for one of the rate limits; try again in ``retry_after`` seconds."""

    status = 429
    problem = "rate-limited"
    title = "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.retry_after = retry_after

    def public_detail(self) -> str:
        return f"try again in {self.retry_after} seconds"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UnknownUserError(TokenwardError):
    """No user has this email."""

    status = 404
    problem = "not-found"
    title = "Not found"


class InvalidRoleError(TokenwardError):
    """A role name or a permission that breaks the syntax (core.roles)."""

    status = 422
    problem = "invalid-role"
    title = "Invalid role"

    def public_detail(self) -> str:
        return str(self)


class InvalidMetadataError(TokenwardError):
    """``app_metadata`` or ``user_metadata`` that is not a JSON object, or too large."""

    status = 422
    problem = "invalid-metadata"
    title = "Invalid metadata"

    def public_detail(self) -> str:
        return str(self)


class UnknownRoleError(UnknownUserError):
    """No role of this name (or the user does not hold it)."""

    def public_detail(self) -> str:
        return str(self)


class ClientAuthenticationError(TokenwardError):
    """Missing or wrong client credentials on the admin API (never a user's token)."""

    status = 401
    problem = "invalid-client"
    title = "Client authentication failed"

    def public_detail(self) -> str:
        return "authenticate with client credentials (HTTP Basic client_id:client_secret)"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="tokenward"'}


class InsufficientScopeError(TokenwardError):
    """The client's credentials are right, but do not grant the operation's scope."""

    status = 403
    problem = "insufficient-scope"
    title = "Insufficient scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this operation needs the {scope} scope")
        self.scope = scope

    def public_detail(self) -> str:
        return str(self)

    def extra(self) -> dict[str, Any]:
        return {"scope": self.scope}


class InvalidCursorError(TokenwardError):
    """A paging cursor this server did not hand out (start again without one)."""

    status = 400
    problem = "invalid-cursor"
    title = "Invalid cursor"

    def public_detail(self) -> str:
        return "the cursor is not one this server handed out; start again without one"


class ClaimsUnavailableError(TokenwardError):
    """The claims hook raised, timed out, or answered what cannot go in a token.

    No token is issued without the claims the deployment relies on: the request fails, changes
    nothing, and may be retried. What went wrong is an event (``claims.hook_failed``)."""

    status = 503
    problem = "claims-unavailable"
    title = "Claims unavailable"
    retry_after: ClassVar[int] = 2

    def __init__(self, reason: str) -> None:
        super().__init__(f"claims hook failed ({reason})")
        self.reason = reason

    def public_detail(self) -> str:
        return "the token's claims cannot be computed right now; try again shortly"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class MfaFailedError(TokenwardError):
    """A second-factor code, or the pending sign-in it was sent for, was not accepted: one
    answer for a wrong code, a code used before, an unknown, used, expired or exhausted
    ``mfa_token`` (no oracle)."""

    status = 401
    problem = "mfa-failed"
    title = "Second factor not accepted"

    def public_detail(self) -> str:
        return "the code is wrong, or the sign-in attempt is no longer valid"


class InvalidMfaCodeError(TokenwardError):
    """The code sent to confirm a new factor is not the factor's current code."""

    status = 422
    problem = "invalid-mfa-code"
    title = "Invalid code"

    def public_detail(self) -> str:
        return "the code does not match; check the authenticator app's clock and try again"


class StepUpRequiredError(TokenwardError):
    """The operation needs a more recent or a stronger authentication than the access token
    shows: RFC 9470's challenge, the same one ``tokenward.verify`` gives resource servers."""

    status = 401
    problem = "insufficient-user-authentication"
    title = "Insufficient user authentication"

    def __init__(self, *, acr_values: str | None = None, max_age: int | None = None) -> None:
        super().__init__("a stronger or more recent authentication is required")
        self.acr_values = acr_values
        self.max_age = max_age

    def public_detail(self) -> str:
        return "authenticate again (POST /auth/reauthenticate), then retry"

    def headers(self) -> dict[str, str]:
        params = [
            'realm="tokenward"',
            'error="insufficient_user_authentication"',
            'error_description="a stronger or more recent authentication is required"',
        ]
        if self.acr_values is not None:
            params.append(f'acr_values="{self.acr_values}"')
        if self.max_age is not None:
            params.append(f'max_age="{self.max_age}"')  # quoted, as RFC 9470 section 3 shows
        return {"WWW-Authenticate": "Bearer " + ", ".join(params)}

    def extra(self) -> dict[str, Any]:
        said: dict[str, Any] = {}
        if self.acr_values is not None:
            said["acr_values"] = self.acr_values
        if self.max_age is not None:
            said["max_age"] = self.max_age
        return said


class UnknownFactorError(TokenwardError):
    """The signed-in user has no factor of this id (or it is not waiting to be confirmed)."""

    status = 404
    problem = "unknown-factor"
    title = "Unknown factor"


class FactorLimitError(TokenwardError):
    """The user holds as many confirmed factors as allowed (core.mfa.MAX_FACTORS)."""

    status = 409
    problem = "too-many-factors"
    title = "Too many factors"

    def public_detail(self) -> str:
        return "remove a factor before adding another"


class PasskeyFailedError(TokenwardError):
    """A passkey assertion was not accepted: an unknown credential, a challenge used or
    expired, another origin, no user verification, a bad signature (no oracle)."""

    status = 401
    problem = "passkey-failed"
    title = "Passkey not accepted"

    def public_detail(self) -> str:
        return "the passkey could not sign you in; try again"


class InvalidPasskeyError(TokenwardError):
    """A registration ceremony that does not verify (challenge, origin, RP id, attestation)."""

    status = 422
    problem = "invalid-passkey"
    title = "Invalid passkey"

    def public_detail(self) -> str:
        return "the passkey could not be registered; try again"


class PasskeyTakenError(InvalidPasskeyError):
    """The credential is registered already (the excluded credentials were not honoured)."""


class KeyRotationError(TokenwardError):
    """A key operation was refused (unknown key, or it would leave nothing to sign with)."""


class UnavailableError(TokenwardError):
    """A backing service (``dependency``: "database" or "redis") is unreachable or busy.

    Transient by nature: the request changed nothing and may be retried; the web layer answers
    503 with Retry-After. Which dependency and why goes to the log, never to the client.
    """

    status = 503
    problem = "unavailable"
    title = "Service unavailable"
    retry_after: ClassVar[int] = 2

    def public_detail(self) -> str:
        return "tokenward cannot reach its storage right now; try again shortly"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable ({reason})")
        self.dependency = dependency
        self.reason = reason


class SchemaVersionError(TokenwardError):
    """The database is at a migration this version does not ship (a newer tokenward made it)."""
