"""Request and response bodies of the HTTP contract."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenward.users import MAX_EMAIL_LENGTH

__all__ = ["Credentials", "JWKSet", "OAuthTokenResponse", "TokenResponse", "UserResponse"]

# Generous enough for any valid password (128 characters of 4-byte UTF-8) while the policy
# gives the precise 422; anything longer is refused by the schema before hashing.
_PASSWORD_FIELD_MAX = 1024


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=MAX_EMAIL_LENGTH * 2, examples=["ada@example.com"])
    password: str = Field(
        max_length=_PASSWORD_FIELD_MAX, examples=["correct horse battery staple 42"]
    )


class UserResponse(BaseModel):
    id: str
    email: str
    created_at: datetime


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the RFC 6750 scheme name
    expires_in: int


class OAuthTokenResponse(TokenResponse):
    refresh_token: str


class JWKSet(BaseModel):
    keys: list[dict[str, str]]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "unavailable"]]
    """One entry per dependency: ``database``, and ``redis`` when configured."""
