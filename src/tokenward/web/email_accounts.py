"""Accounts by email over HTTP: verification, password reset, email change, deletion.

Thin: each route parses its body and calls ``service.email_accounts``. The answers that must
not tell whether an account exists are one constant 202 (docs/email.md).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from tokenward.core.passwords import PASSWORD_MAX_LENGTH
from tokenward.core.users import MAX_EMAIL_LENGTH
from tokenward.exceptions import (
    AuthenticationError,
    EmailTakenError,
    InvalidEmailError,
    LinkInvalidError,
    PasswordPolicyError,
    TokenError,
)
from tokenward.infra.mail import LogDelivery
from tokenward.web.deps import Client, CurrentUser, Service
from tokenward.web.openapi import (
    BEARER,
    BODY,
    GUARDED,
    RATE_LIMITED,
    UNAVAILABLE,
    Responses,
    declare,
    problem_response,
    unprocessable,
)
from tokenward.web.routes import clear_cookie
from tokenward.web.schemas import ACCEPTED, PASSWORD_SCHEMA, accepted

__all__ = ["mailbox_router", "router"]

router = APIRouter(prefix="/auth", responses=UNAVAILABLE)

_PASSWORD_FIELD_MAX = PASSWORD_MAX_LENGTH * 8
_TOKEN_MAX = 200
LINK_INVALID = declare(LinkInvalidError, "The link is unknown, used, superseded or expired.")
WRONG_CURRENT_PASSWORD: Responses = {
    401: problem_response(
        401,
        "No valid access token (invalid-token), or a wrong current password (invalid-credentials).",
        TokenError.problem,
        AuthenticationError.problem,
    )
}


class EmailBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=MAX_EMAIL_LENGTH * 2, examples=["ada@example.com"])


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=_TOKEN_MAX)


class ResetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=_TOKEN_MAX)
    new_password: str = Field(max_length=_PASSWORD_FIELD_MAX, json_schema_extra=PASSWORD_SCHEMA)


class EmailChangeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_email: str = Field(max_length=MAX_EMAIL_LENGTH * 2, examples=["ada@new.example"])
    current_password: str = Field(max_length=_PASSWORD_FIELD_MAX, json_schema_extra=PASSWORD_SCHEMA)


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=_PASSWORD_FIELD_MAX, json_schema_extra=PASSWORD_SCHEMA)


@router.post(
    "/verify-email/request",
    status_code=202,
    responses={**BODY, **ACCEPTED, **unprocessable(InvalidEmailError.problem), **RATE_LIMITED},
)
async def request_verification(body: EmailBody, service: Service, client: Client) -> Response:
    await service.email_accounts.request_verification(body.email, client)
    return accepted()


@router.post(
    "/verify-email",
    status_code=204,
    responses={**BODY, **LINK_INVALID, **unprocessable()},
)
async def verify_email(body: TokenBody, service: Service, client: Client) -> Response:
    await service.email_accounts.verify_email(body.token, client)
    return Response(status_code=204)


@router.post(
    "/password/forgot",
    status_code=202,
    responses={**BODY, **ACCEPTED, **unprocessable(InvalidEmailError.problem), **RATE_LIMITED},
)
async def forgot_password(body: EmailBody, service: Service, client: Client) -> Response:
    await service.email_accounts.forgot_password(body.email, client)
    return accepted()


@router.post(
    "/password/reset",
    status_code=204,
    responses={**BODY, **LINK_INVALID, **unprocessable(PasswordPolicyError.problem)},
)
async def reset_password(body: ResetBody, service: Service, client: Client) -> Response:
    await service.email_accounts.reset_password(body.token, body.new_password, client)
    return Response(status_code=204)


@router.post(
    "/email",
    status_code=202,
    responses={
        **BODY,
        **ACCEPTED,
        **WRONG_CURRENT_PASSWORD,
        **unprocessable(InvalidEmailError.problem, PasswordPolicyError.problem),
        **RATE_LIMITED,
    },
)
async def request_email_change(
    body: EmailChangeBody, principal: CurrentUser, service: Service, client: Client
) -> Response:
    await service.email_accounts.request_change(
        principal, body.new_email, body.current_password, client
    )
    return accepted()


@router.delete("/email", status_code=204, responses={**GUARDED, **BEARER, **RATE_LIMITED})
async def withdraw_email_change(
    principal: CurrentUser, service: Service, client: Client
) -> Response:
    await service.email_accounts.withdraw_change(principal, client)
    return Response(status_code=204)


@router.post(
    "/email/confirm",
    status_code=204,
    responses={
        **BODY,
        **LINK_INVALID,
        **declare(EmailTakenError, "Another account took the address meanwhile."),
        **unprocessable(),
    },
)
async def confirm_email_change(body: TokenBody, service: Service, client: Client) -> Response:
    await service.email_accounts.confirm_change(body.token, client)
    return Response(status_code=204)


@router.post(
    "/email/cancel", status_code=204, responses={**BODY, **LINK_INVALID, **unprocessable()}
)
async def cancel_email_change(body: TokenBody, service: Service, client: Client) -> Response:
    await service.email_accounts.cancel_change(body.token, client)
    return Response(status_code=204)


@router.delete(
    "/account",
    status_code=204,
    responses={
        **BODY,
        **WRONG_CURRENT_PASSWORD,
        **unprocessable(PasswordPolicyError.problem),
        **RATE_LIMITED,
    },
)
async def delete_account(
    body: PasswordBody,
    request: Request,
    principal: CurrentUser,
    service: Service,
    client: Client,
) -> Response:
    await service.email_accounts.delete_account(principal, body.current_password, client)
    response = Response(status_code=204)
    clear_cookie(request, service, response)
    return response


# -- the development mailbox ---------------------------------------------------------------

mailbox_router = APIRouter()
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_FORWARDING = ("x-forwarded-for", "forwarded", "x-real-ip")


class MailOut(BaseModel):
    to: str
    subject: str
    text: str
    sent_at: datetime


@mailbox_router.get("/demo/mailbox", response_model=list[MailOut], include_in_schema=False)
async def mailbox(request: Request, service: Service) -> list[MailOut]:
    """What this process would have sent (development, ``TOKENWARD_EMAIL_DELIVERY=log``), to
    a browser on this machine only: it holds every link, so a development server reachable
    from elsewhere must not hand them out."""
    delivery = service.outbox.delivery
    peer = request.client.host if request.client else ""
    # Through a proxy or a tunnel on this machine (a forwarding header) the asker is elsewhere.
    forwarded = any(name in request.headers for name in _FORWARDING)
    if not isinstance(delivery, LogDelivery) or peer not in _LOOPBACK or forwarded:
        raise HTTPException(404)
    return [MailOut.model_validate(mail, from_attributes=True) for mail in delivery.mailbox]
