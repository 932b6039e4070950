"""Passkeys' endpoints: register and manage them (Bearer), the second factor's options, and the
passwordless sign-in (docs/passkeys.md). Mounted unless ``TOKENWARD_PASSKEYS=off``; the
passwordless routes only in ``passwordless`` mode."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tokenward.core.passkeys import MAX_NAME_LENGTH, Passkey
from tokenward.exceptions import (
    FactorLimitError,
    InvalidPasskeyError,
    MfaFailedError,
    PasskeyFailedError,
    UnknownFactorError,
)
from tokenward.web.deps import NO_STORE, Client, CurrentUser, SameOrigin, Service
from tokenward.web.openapi import (
    BEARER,
    BODY,
    CROSS_ORIGIN,
    GUARDED,
    RATE_LIMITED,
    STEP_UP,
    UNAVAILABLE,
    declare,
    unprocessable,
)
from tokenward.web.routes import token_response
from tokenward.web.schemas import TokenResponse

__all__ = ["login_router", "mfa_router", "router"]

router = APIRouter(prefix="/auth/passkeys")
login_router = APIRouter(prefix="/auth/passkeys")
"""Passwordless sign-in: mounted in ``passwordless`` mode only."""
mfa_router = APIRouter(prefix="/auth/mfa")

_OPTIONS_HELP = (
    "WebAuthn L3 options JSON (base64url binary members), for "
    "PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON."
)
_CREDENTIAL = Field(
    description="The PublicKeyCredential's toJSON(): WebAuthn L3 RegistrationResponseJSON or "
    "AuthenticationResponseJSON (base64url members)."
)
_NO_PASSKEY = declare(UnknownFactorError, "No such passkey of yours.")
_FAILED = declare(
    PasskeyFailedError,
    "The passkey did not sign in: an unknown credential, a challenge used or expired, another "
    "origin, no user verification, a bad signature: one answer for all.",
)


class PasskeyOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    synced: bool = Field(description="Backup-eligible: a multi-device passkey.")
    backed_up: bool


def _passkey(passkey: Passkey) -> dict[str, Any]:
    return PasskeyOut(
        id=passkey.id,
        name=passkey.name,
        created_at=passkey.created_at,
        last_used_at=passkey.last_used_at,
        synced=passkey.backup_eligible,
        backed_up=passkey.backed_up,
    ).model_dump(mode="json")


class PasskeyList(BaseModel):
    passkeys: list[PasskeyOut]


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential: dict[str, Any] = _CREDENTIAL
    name: str = Field(default="Passkey", min_length=1, max_length=MAX_NAME_LENGTH)


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)


class LoginOptionsOut(BaseModel):
    flow_id: str = Field(description="Send it back with the credential.")
    options: dict[str, Any] = Field(description=_OPTIONS_HELP)


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow_id: str = Field(min_length=1, max_length=36)
    credential: dict[str, Any] = _CREDENTIAL


class MfaOptionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mfa_token: str = Field(min_length=1, max_length=100)


PasskeyId = Annotated[str, Path(min_length=1, max_length=36)]


@router.post(
    "/register/options",
    responses={
        **GUARDED,
        **STEP_UP,
        **declare(FactorLimitError, "Too many passkeys."),
        **UNAVAILABLE,
    },
)
async def registration_options(principal: CurrentUser, service: Service) -> JSONResponse:
    """Creation options for a new passkey (recently authenticated; aal2 with a second factor):
    a discoverable credential preferred, user verification required, yours excluded."""
    options = await service.passkeys.registration_options(principal)
    return JSONResponse(options, headers=NO_STORE)


@router.post(
    "/register",
    status_code=201,
    response_model=PasskeyOut,
    responses={
        **BODY,
        **BEARER,
        **unprocessable(InvalidPasskeyError.problem),
        **declare(FactorLimitError, "Too many passkeys."),
        **UNAVAILABLE,
    },
)
async def register(
    body: RegisterRequest, principal: CurrentUser, service: Service, client: Client
) -> JSONResponse:
    """Verify the registration ceremony and keep the passkey."""
    passkey = await service.passkeys.register(principal, body.credential, body.name, client)
    return JSONResponse(_passkey(passkey), status_code=201, headers=NO_STORE)


@router.get("", response_model=PasskeyList, responses={**BEARER, **UNAVAILABLE})
async def list_passkeys(principal: CurrentUser, service: Service) -> JSONResponse:
    """Your passkeys: name, when made and last used, synced or bound to one device."""
    held = await service.passkeys.held(principal)
    return JSONResponse({"passkeys": [_passkey(p) for p in held]}, headers=NO_STORE)


@router.patch(
    "/{passkey_id}",
    response_model=PasskeyOut,
    responses={
        **BODY,
        **BEARER,
        **_NO_PASSKEY,
        **unprocessable(InvalidPasskeyError.problem),
        **UNAVAILABLE,
    },
)
async def rename(
    passkey_id: PasskeyId, body: RenameRequest, principal: CurrentUser, service: Service
) -> JSONResponse:
    passkey = await service.passkeys.rename(principal, passkey_id, body.name)
    return JSONResponse(_passkey(passkey), headers=NO_STORE)


@router.delete(
    "/{passkey_id}", status_code=204, responses={**GUARDED, **STEP_UP, **_NO_PASSKEY, **UNAVAILABLE}
)
async def remove(
    passkey_id: PasskeyId, principal: CurrentUser, service: Service, client: Client
) -> Response:
    """Remove a passkey (aal2 and recent)."""
    await service.passkeys.remove(principal, passkey_id, client)
    return Response(status_code=204)


@router.post(
    "/reauthenticate/options",
    responses={**GUARDED, **BEARER, **_NO_PASSKEY, **UNAVAILABLE},
)
async def reauthentication_options(principal: CurrentUser, service: Service) -> JSONResponse:
    """Request options to step up with one of your passkeys; then POST /auth/reauthenticate
    ``{method: "webauthn", credential}``."""
    options = await service.passkeys.reauthentication_options(principal)
    return JSONResponse(options, headers=NO_STORE)


@login_router.post(
    "/login/options", response_model=LoginOptionsOut, responses={**GUARDED, **UNAVAILABLE}
)
async def login_options(service: Service) -> JSONResponse:
    """Options for a passwordless sign-in: no credentials listed, so the browser offers the
    user's passkeys (conditional UI works); user verification required."""
    found = await service.passkeys.login_options()
    return JSONResponse({"flow_id": found.flow_id, "options": found.options}, headers=NO_STORE)


@login_router.post(
    "/login",
    response_model=TokenResponse,
    responses={**BODY, **_FAILED, **CROSS_ORIGIN, **RATE_LIMITED, **UNAVAILABLE},
    dependencies=[SameOrigin],
)
async def login(
    request: Request, body: LoginRequest, service: Service, client: Client
) -> JSONResponse:
    """Sign in with a passkey alone: tokens as a login, ``acr`` aal2."""
    issued = await service.passkeys.login(body.flow_id, body.credential, client)
    return token_response(request, service, issued)


@mfa_router.post(
    "/webauthn/options",
    responses={
        **BODY,
        **declare(MfaFailedError, "The mfa_token is unknown, used or expired, or no passkey."),
        **UNAVAILABLE,
    },
)
async def second_factor_options(body: MfaOptionsRequest, service: Service) -> JSONResponse:
    """Request options for a pending sign-in's passkey (the user's passkeys allowed)."""
    options = await service.passkeys.second_factor_options(body.mfa_token)
    return JSONResponse(options, headers=NO_STORE)
