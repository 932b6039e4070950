"""Request and response bodies of the HTTP contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from tokenward.core.passwords import PASSWORD_MAX_LENGTH
from tokenward.core.users import MAX_EMAIL_LENGTH

__all__ = [
    "ACCEPTED",
    "PASSWORD_SCHEMA",
    "Accepted",
    "Credentials",
    "Introspection",
    "JWKSet",
    "MfaGrant",
    "MfaRequired",
    "MfaRequiredError",
    "OAuthError",
    "OAuthTokenResponse",
    "PasswordGrant",
    "Problem",
    "ProfilePatch",
    "RefreshTokenGrant",
    "RevocationFeed",
    "ServerMetadata",
    "TokenResponse",
    "UserResponse",
    "accepted",
]

# Generous enough for any valid password (128 characters of 4-byte UTF-8) while the policy
# gives the precise 422; anything longer is refused by the schema before hashing.
_PASSWORD_FIELD_MAX = 1024
# What the document promises is the policy's cap (the 422 above it is weak-password).
PASSWORD_SCHEMA: dict[str, Any] = {
    "maxLength": PASSWORD_MAX_LENGTH,
    "description": f"At most {PASSWORD_MAX_LENGTH} characters after NFKC normalisation; "
    "longer gets 422 weak-password (rule password_too_long).",
}


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=MAX_EMAIL_LENGTH * 2, examples=["ada@example.com"])
    password: str = Field(
        max_length=_PASSWORD_FIELD_MAX,
        examples=["correct horse battery staple 42"],
        json_schema_extra=PASSWORD_SCHEMA,
    )


class UserResponse(BaseModel):
    id: str
    email: str
    created_at: datetime
    email_verified: bool = False
    roles: list[str] = Field(default_factory=list, description="The roles held now.")
    scope: str = Field(
        default="", description="The roles' permissions now, space-separated (as in tokens)."
    )
    app_metadata: dict[str, Any] = Field(
        default_factory=dict, description="Set by operators and the admin API only."
    )
    user_metadata: dict[str, Any] = Field(
        default_factory=dict, description="The user's own data (PATCH /auth/me)."
    )


class ProfilePatch(BaseModel):
    """PATCH /auth/me: an RFC 7396 merge patch of ``user_metadata`` (``null`` removes)."""

    model_config = ConfigDict(extra="forbid")

    user_metadata: dict[str, Any]


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"


ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: the same status, headers and body whatever the address "
        "(docs/email.md).",
        "model": Accepted,
    }
}


def accepted() -> JSONResponse:
    """The one 202: the same status, headers and body whatever happened behind it."""
    return JSONResponse({"status": "accepted"}, status_code=202)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the RFC 6750 scheme name
    expires_in: int


class OAuthTokenResponse(TokenResponse):
    refresh_token: str


class MfaRequired(BaseModel):
    """The password was right; the sign-in waits for a second factor (no token, no cookie)."""

    mfa_required: Literal[True] = True
    mfa_token: str = Field(
        description="Opaque; for POST /auth/mfa/verify (or, with `enrollment_required`, "
        "/auth/mfa/totp/enroll and /confirm). Single use, 5 minutes, 5 wrong codes."
    )
    methods: list[Literal["totp", "recovery_code", "webauthn"]]
    expires_in: int
    enrollment_required: bool = Field(
        description="TOKENWARD_MFA=required and no factor yet: enrol one to sign in."
    )


class JWKSet(BaseModel):
    keys: list[dict[str, str]]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "unavailable"]]
    """One entry per dependency: ``database``, and ``redis`` when configured."""


# -- errors ---------------------------------------------------------------------------------


def _absent_not_null(schema: dict[str, Any]) -> None:
    """An optional member here is left out, never null: no ``"default": null`` in the schema."""
    for member in schema.get("properties", {}).values():
        if "default" in member and member["default"] is None:
            del member["default"]


class ValidationIssue(BaseModel):
    loc: list[str] = Field(examples=[["body", "email"]])
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error answer but the OAuth endpoints'."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_absent_not_null)

    type: str = Field(
        description="Stable `urn:tokenward:problem:<code>`: branch on this, not on the text.",
        examples=["urn:tokenward:problem:invalid-token"],
    )
    title: str
    status: int = Field(ge=400, le=599, description="The HTTP status code, repeated.")
    detail: str | SkipJsonSchema[None] = None
    errors: list[ValidationIssue] | SkipJsonSchema[None] = Field(
        default=None, description="invalid-request: where the request does not match the schema."
    )
    rule: (
        Literal[
            "email_invalid",
            "password_too_short",
            "password_too_long",
            "password_common",
            "password_matches_email",
        ]
        | SkipJsonSchema[None]
    ) = Field(default=None, description="invalid-email and weak-password: the rule broken.")
    request_id: str | SkipJsonSchema[None] = Field(
        default=None,
        description="The request's id, as in its `X-Request-ID` answer header and log lines.",
    )


class OAuthError(BaseModel):
    """RFC 6749 section 5.2: the error shape of the OAuth endpoints (not problem details)."""

    error: Literal["invalid_request", "invalid_client", "invalid_grant", "unsupported_grant_type"]
    error_description: str


class MfaRequiredError(OAuthError):
    """The token endpoint's answer for a user with a second factor: RFC 6749 invalid_grant,
    with the pending sign-in (complete it with the grant_type
    urn:tokenward:params:oauth:grant-type:mfa)."""

    error_description: Literal["mfa_required"]
    mfa_token: str
    methods: list[Literal["totp", "recovery_code", "webauthn"]]
    expires_in: int
    enrollment_required: bool


# -- the OAuth endpoints ---------------------------------------------------------------------


class PasswordGrant(BaseModel):
    """RFC 6749 4.3.2: the resource owner password credentials grant."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    grant_type: Literal["password"]
    username: str = Field(
        min_length=1, description="The email address.", examples=["ada@example.com"]
    )
    password: str = Field(
        min_length=1,
        examples=["correct horse battery staple 42"],
        json_schema_extra=PASSWORD_SCHEMA,
    )
    scope: str | SkipJsonSchema[None] = Field(default=None, description="Accepted and ignored.")


class RefreshTokenGrant(BaseModel):
    """RFC 6749 6: a refresh token for a new access token (and its successor)."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    grant_type: Literal["refresh_token"]
    refresh_token: str = Field(min_length=1)
    scope: str | SkipJsonSchema[None] = Field(default=None, description="Accepted and ignored.")


class MfaGrant(BaseModel):
    """tokenward's extension grant (RFC 6749 4.5): complete a pending sign-in with a code."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    grant_type: Literal["urn:tokenward:params:oauth:grant-type:mfa"]
    mfa_token: str = Field(min_length=1, description="From the invalid_grant mfa_required.")
    method: Literal["totp", "recovery_code"] | SkipJsonSchema[None] = Field(
        default=None, description="totp when absent."
    )
    code: str = Field(min_length=1, max_length=64)


class Introspection(BaseModel):
    """RFC 7662 2.2: ``{"active": false}`` alone for anything not currently valid."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    active: bool
    token_type: Literal["access_token", "refresh_token"] | SkipJsonSchema[None] = None
    sub: str | SkipJsonSchema[None] = None
    sid: str | SkipJsonSchema[None] = None
    username: str | SkipJsonSchema[None] = None
    iss: str | SkipJsonSchema[None] = None
    aud: str | list[str] | SkipJsonSchema[None] = None
    exp: int | SkipJsonSchema[None] = None
    iat: int | SkipJsonSchema[None] = None
    jti: str | SkipJsonSchema[None] = None
    scope: str | SkipJsonSchema[None] = None
    acr: str | SkipJsonSchema[None] = None
    auth_time: int | SkipJsonSchema[None] = None
    amr: list[str] | SkipJsonSchema[None] = None


class RevokedSession(BaseModel):
    sid: str
    revoked_at: int = Field(description="Unix time, seconds.")


class RevocationFeed(BaseModel):
    revoked: list[RevokedSession]
    cursor: str = Field(description="Pass as `after` to get the next page.")
    poll_interval: int = Field(description="Seconds to wait before asking again.")


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata."""

    issuer: str
    jwks_uri: str
    token_endpoint: str
    introspection_endpoint: str
    revocation_endpoint: str
    grant_types_supported: list[str]
    response_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    scopes_supported: list[str]
