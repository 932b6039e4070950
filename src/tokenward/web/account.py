"""The signed-in user's own account: sessions, logout everywhere, password, events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from tokenward.core.passwords import PASSWORD_MAX_LENGTH
from tokenward.exceptions import AuthenticationError, PasswordPolicyError, TokenError
from tokenward.web.deps import Client, CurrentUser, Service
from tokenward.web.openapi import (
    BEARER,
    BODY,
    GUARDED,
    RATE_LIMITED,
    UNAVAILABLE,
    problem_response,
    unprocessable,
)
from tokenward.web.routes import clear_cookie
from tokenward.web.schemas import PASSWORD_SCHEMA

__all__ = ["router"]

router = APIRouter(prefix="/auth", responses={**BEARER, **UNAVAILABLE})


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    device: str
    ip: str | None
    current: bool


class SessionList(BaseModel):
    sessions: list[SessionOut]


class EventOut(BaseModel):
    id: int
    at: datetime
    type: str
    session_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any] | None


class EventList(BaseModel):
    events: list[EventOut]


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(
        max_length=PASSWORD_MAX_LENGTH * 8, json_schema_extra=PASSWORD_SCHEMA
    )
    new_password: str = Field(max_length=PASSWORD_MAX_LENGTH * 8, json_schema_extra=PASSWORD_SCHEMA)


@router.get("/sessions", response_model=SessionList)
async def list_sessions(principal: CurrentUser, service: Service) -> SessionList:
    sessions = await service.sessions.list_sessions(principal)
    return SessionList(
        sessions=[SessionOut.model_validate(s, from_attributes=True) for s in sessions]
    )


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    responses={
        **GUARDED,
        404: problem_response(404, "No such session of yours.", "not-found"),
        **RATE_LIMITED,
    },
)
async def revoke_session(
    session_id: str, principal: CurrentUser, service: Service, client: Client
) -> Response:
    # Someone else's session answers exactly like one that does not exist: 404, never 403.
    if not await service.sessions.revoke_session(principal, session_id, client):
        raise HTTPException(404, "no such session")
    return Response(status_code=204)


@router.post("/logout-all", status_code=204, responses={**GUARDED, **RATE_LIMITED})
async def logout_all(
    request: Request, principal: CurrentUser, service: Service, client: Client
) -> Response:
    await service.sessions.logout_all(principal, client)
    response = Response(status_code=204)
    clear_cookie(request, service, response)
    return response


@router.post("/logout-others", status_code=204, responses={**GUARDED, **RATE_LIMITED})
async def logout_others(principal: CurrentUser, service: Service, client: Client) -> Response:
    await service.sessions.logout_all(principal, client, keep_current=True)
    return Response(status_code=204)


@router.post(
    "/password",
    status_code=204,
    responses={
        **BODY,
        401: problem_response(
            401,
            "No valid access token (invalid-token), or a wrong current password "
            "(invalid-credentials).",
            TokenError.problem,
            AuthenticationError.problem,
            headers={
                "WWW-Authenticate": {
                    "description": "With invalid-token only.",
                    "schema": {"type": "string"},
                }
            },
        ),
        **unprocessable(PasswordPolicyError.problem),
        **RATE_LIMITED,
    },
)
async def change_password(
    body: PasswordChange, principal: CurrentUser, service: Service, client: Client
) -> Response:
    await service.accounts.change_password(
        principal, body.current_password, body.new_password, client
    )
    return Response(status_code=204)


@router.get("/events", response_model=EventList, responses=unprocessable())
async def recent_events(
    principal: CurrentUser,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> EventList:
    events = await service.sessions.recent_events(principal.user.id, limit)
    return EventList(events=[EventOut.model_validate(e, from_attributes=True) for e in events])
