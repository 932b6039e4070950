"""The second factor's endpoints: enrol, confirm, list and remove factors, recovery codes,
complete a pending sign-in, and reauthenticate (docs/mfa.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tokenward.app.mfa import Confirmed, FactorInfo
from tokenward.app.service import Principal
from tokenward.core.mfa import MfaMethod
from tokenward.core.passwords import PASSWORD_MAX_LENGTH
from tokenward.exceptions import (
    AuthenticationError,
    FactorLimitError,
    InvalidMfaCodeError,
    MfaFailedError,
    StepUpRequiredError,
    TokenError,
    UnknownFactorError,
)
from tokenward.web.deps import (
    NO_STORE,
    Client,
    CurrentUser,
    SameOrigin,
    Service,
    bearer_challenge,
    current_user,
)
from tokenward.web.openapi import (
    BEARER,
    BODY,
    CROSS_ORIGIN,
    GUARDED,
    RATE_LIMITED,
    STEP_UP,
    UNAVAILABLE,
    Responses,
    declare,
    problem_response,
    unprocessable,
)
from tokenward.web.routes import token_response
from tokenward.web.schemas import PASSWORD_SCHEMA, TokenResponse

__all__ = ["reauthentication_router", "router"]

router = APIRouter(prefix="/auth/mfa")
"""Mounted unless ``TOKENWARD_MFA=off``."""
reauthentication_router = APIRouter()

_CODE = Field(min_length=1, max_length=64, examples=["123456"])
_MFA_TOKEN = Field(min_length=1, max_length=100)
_FAILED = declare(
    MfaFailedError,
    "The code is wrong or was used before, or the mfa_token is unknown, used, expired or past "
    "its failures: one answer for all.",
)
_NO_FACTOR = declare(UnknownFactorError, "No such factor of yours.")
_ENROL_REFUSED: Responses = {
    401: problem_response(
        401,
        "No valid access token and no mfa_token (invalid-token); an authentication too old or "
        "too weak to change factors (insufficient-user-authentication, RFC 9470: "
        "POST /auth/reauthenticate, then retry); an mfa_token that is unknown, used, expired "
        "or past its failures (mfa-failed).",
        TokenError.problem,
        StepUpRequiredError.problem,
        MfaFailedError.problem,
        headers={
            "WWW-Authenticate": {
                "description": "With invalid-token and insufficient-user-authentication.",
                "schema": {"type": "string"},
            }
        },
    )
}


async def _optional_user(request: Request, service: Service) -> Principal | None:
    """The signed-in user when the request carries an Authorization header, else None."""
    if request.headers.get("authorization") is None:
        return None
    return await current_user(request, service, _bearer_token(request))


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


MaybeUser = Annotated[Principal | None, Depends(_optional_user)]


class FactorOut(BaseModel):
    id: str
    type: Literal["totp"]
    created_at: datetime
    last_used_at: datetime | None


def _factor(info: FactorInfo) -> FactorOut:
    return FactorOut(
        id=info.id, type=info.type.value, created_at=info.created_at, last_used_at=info.last_used_at
    )


class FactorList(BaseModel):
    factors: list[FactorOut]
    recovery_codes_remaining: int


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mfa_token: str | None = Field(
        default=None,
        max_length=100,
        description="Without an access token: the pending sign-in that must enrol "
        "(enrollment_required).",
    )


class Enrollment(BaseModel):
    factor_id: str
    secret: str = Field(description="Base32, for typing into an authenticator app.")
    otpauth_uri: str
    qr_svg: str = Field(description="The otpauth URI as a QR code, an SVG document.")
    expires_in: int = Field(description="Seconds left to confirm it.")


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor_id: str = Field(min_length=1, max_length=36)
    code: str = _CODE
    mfa_token: str | None = Field(default=None, max_length=100)


class ConfirmAnswer(BaseModel):
    factor: FactorOut
    recovery_codes: list[str] | None = Field(
        description="With the first factor only, shown this once: keep them somewhere safe."
    )
    access_token: str | None = Field(
        default=None, description="Enrolled to complete a sign-in: its access token."
    )
    token_type: Literal["Bearer"] | None = None
    expires_in: int | None = None


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]


class VerifyRequest(BaseModel):
    """A TOTP code or a recovery code."""

    model_config = ConfigDict(extra="forbid")

    mfa_token: str = _MFA_TOKEN
    method: Literal["totp", "recovery_code"] = "totp"
    code: str = _CODE


class PasskeyVerifyRequest(BaseModel):
    """A passkey's assertion (after POST /auth/mfa/webauthn/options)."""

    model_config = ConfigDict(extra="forbid")

    mfa_token: str = _MFA_TOKEN
    method: Literal["webauthn"]
    credential: dict[str, Any] = Field(
        description="The PublicKeyCredential's toJSON() (WebAuthn L3 AuthenticationResponseJSON)."
    )


class PasswordProof(BaseModel):
    """Reauthenticate with the password."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=PASSWORD_MAX_LENGTH * 8, json_schema_extra=PASSWORD_SCHEMA)


class FactorProof(BaseModel):
    """Reauthenticate with a second factor: a TOTP code or a recovery code."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["totp", "recovery_code"]
    code: str = _CODE


class PasskeyProof(BaseModel):
    """Reauthenticate with a passkey (after POST /auth/passkeys/reauthenticate/options)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["webauthn"]
    credential: dict[str, Any] = Field(
        description="The PublicKeyCredential's toJSON() (WebAuthn L3 AuthenticationResponseJSON)."
    )


@router.post(
    "/totp/enroll",
    response_model=Enrollment,
    responses={
        **BODY,
        **_ENROL_REFUSED,
        **declare(FactorLimitError, "You hold as many factors as allowed (5)."),
        **UNAVAILABLE,
    },
)
async def enroll(
    principal: MaybeUser, service: Service, client: Client, body: EnrollRequest | None = None
) -> JSONResponse:
    """Start enrolling a TOTP factor: its secret, ``otpauth://`` URI and QR code. Needs a
    recent authentication (``TOKENWARD_REAUTH_MAX_AGE``) and, with a factor already, aal2; or,
    without an access token, the ``mfa_token`` of a sign-in that must enrol."""
    if principal is None:
        token = body.mfa_token if body else None
        if not token:
            raise bearer_challenge(error=False)
        enrolment = await service.mfa.enroll(client, mfa_token=token)
    else:
        enrolment = await service.mfa.enroll(client, principal=principal)
    answer = Enrollment(
        factor_id=enrolment.factor_id,
        secret=enrolment.secret,
        otpauth_uri=enrolment.otpauth_uri,
        qr_svg=enrolment.qr_svg,
        expires_in=enrolment.expires_in,
    )
    return JSONResponse(answer.model_dump(), headers=NO_STORE)


@router.post(
    "/totp/confirm",
    response_model=ConfirmAnswer,
    responses={
        **BODY,
        **_ENROL_REFUSED,
        **_NO_FACTOR,
        **unprocessable(InvalidMfaCodeError.problem),
        **CROSS_ORIGIN,
        **UNAVAILABLE,
    },
    dependencies=[SameOrigin],
)
async def confirm(
    request: Request, body: ConfirmRequest, principal: MaybeUser, service: Service, client: Client
) -> JSONResponse:
    """Activate the factor with a code from the app (that time step counts as used). The
    first factor comes with 10 recovery codes, shown this once. Completing a sign-in that had
    to enrol, the answer also carries its access token and sets the refresh cookie."""
    if principal is None:
        if not body.mfa_token:
            raise bearer_challenge(error=False)
        done = await service.mfa.confirm(
            body.factor_id, body.code, client, mfa_token=body.mfa_token
        )
    else:
        done = await service.mfa.confirm(body.factor_id, body.code, client, principal=principal)
    return _confirmed(request, service, done)


def _confirmed(request: Request, service: Service, done: Confirmed) -> JSONResponse:
    answer = ConfirmAnswer(factor=_factor(done.factor), recovery_codes=done.recovery_codes)
    if done.tokens is None:
        return JSONResponse(answer.model_dump(mode="json"), headers=NO_STORE)
    response = token_response(request, service, done.tokens)  # sets the refresh cookie
    answer.access_token = done.tokens.access_token
    answer.token_type = "Bearer"  # noqa: S105 - the RFC 6750 scheme name
    answer.expires_in = done.tokens.expires_in
    signed_in = JSONResponse(answer.model_dump(mode="json"), headers=NO_STORE)
    for name, value in response.raw_headers:
        if name == b"set-cookie":
            signed_in.raw_headers.append((name, value))
    return signed_in


@router.get("/factors", response_model=FactorList, responses={**BEARER, **UNAVAILABLE})
async def factors(principal: CurrentUser, service: Service) -> JSONResponse:
    """Your confirmed factors (never their secrets) and how many recovery codes are left."""
    held = await service.mfa.factors(principal)
    answer = FactorList(
        factors=[_factor(f) for f in held.factors],
        recovery_codes_remaining=held.recovery_codes_remaining,
    )
    return JSONResponse(answer.model_dump(mode="json"), headers=NO_STORE)


@router.delete(
    "/factors/{factor_id}",
    status_code=204,
    responses={**GUARDED, **STEP_UP, **_NO_FACTOR, **UNAVAILABLE},
)
async def remove_factor(
    factor_id: Annotated[str, Path(min_length=1, max_length=36)],
    principal: CurrentUser,
    service: Service,
    client: Client,
) -> Response:
    """Remove a factor (aal2 and recent). The last one takes the recovery codes with it."""
    await service.mfa.remove(principal, factor_id, client)
    return Response(status_code=204)


@router.post(
    "/recovery-codes/regenerate",
    response_model=RecoveryCodes,
    responses={**GUARDED, **STEP_UP, **_NO_FACTOR, **UNAVAILABLE},
)
async def regenerate(principal: CurrentUser, service: Service, client: Client) -> JSONResponse:
    """A new set of 10 recovery codes (aal2 and recent); the old set stops working."""
    codes = await service.mfa.regenerate_recovery_codes(principal, client)
    return JSONResponse(RecoveryCodes(recovery_codes=codes).model_dump(), headers=NO_STORE)


@router.post(
    "/verify",
    response_model=TokenResponse,
    responses={**BODY, **_FAILED, **CROSS_ORIGIN, **RATE_LIMITED, **UNAVAILABLE},
    dependencies=[SameOrigin],
)
async def verify(
    request: Request,
    body: VerifyRequest | PasskeyVerifyRequest,
    service: Service,
    client: Client,
) -> JSONResponse:
    """Complete a pending sign-in with a TOTP code, a recovery code or a passkey: tokens as a
    login (``amr`` ``["pwd","otp","mfa"]``, or ``["pwd","hwk"|"swk","mfa"]``; ``acr`` aal2)."""
    if isinstance(body, PasskeyVerifyRequest):
        if not service.passkeys.enabled:
            raise MfaFailedError("passkeys are off")
        issued = await service.passkeys.verify_second_factor(
            body.mfa_token, body.credential, client
        )
    else:
        method = MfaMethod(body.method)
        issued = await service.mfa.verify(body.mfa_token, method, body.code, client)
    return token_response(request, service, issued)


@reauthentication_router.post(
    "/auth/reauthenticate",
    response_model=TokenResponse,
    responses={
        **BODY,
        401: problem_response(
            401,
            "No valid access token (invalid-token), a wrong password (invalid-credentials) or "
            "a second factor not accepted (mfa-failed).",
            TokenError.problem,
            AuthenticationError.problem,
            MfaFailedError.problem,
            headers={
                "WWW-Authenticate": {
                    "description": "With invalid-token only.",
                    "schema": {"type": "string"},
                }
            },
        ),
        **RATE_LIMITED,
        **UNAVAILABLE,
    },
)
async def reauthenticate(
    body: PasswordProof | FactorProof | PasskeyProof,
    principal: CurrentUser,
    service: Service,
    client: Client,
) -> JSONResponse:
    """Prove it is you again: a new access token with a fresh ``auth_time`` (and ``acr``
    aal2 when a second factor was used). The session's later refreshes carry it."""
    if isinstance(body, PasswordProof):
        done = await service.mfa.reauthenticate(principal, client, password=body.password)
    elif isinstance(body, PasskeyProof):
        if not service.passkeys.enabled:
            raise MfaFailedError("passkeys are off")
        done = await service.passkeys.reauthenticate(principal, body.credential, client)
    else:
        done = await service.mfa.reauthenticate(
            principal, client, method=MfaMethod(body.method), code=body.code
        )
    answer = TokenResponse(access_token=done.access_token, expires_in=done.expires_in)
    return JSONResponse(answer.model_dump(), headers=NO_STORE)
