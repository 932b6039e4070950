"""The admin API (``/admin/*``): users, roles and sessions, for back offices.

Authenticated with client credentials (HTTP Basic, ``tokenward clients create NAME --scope
...``), never with a user's token; each operation needs one scope (core.scopes.AdminScope),
and a client without it gets 403 insufficient-scope. Every change is an event naming the
client. Errors are problem+json like the rest of the API (docs/admin.md). Every answer, errors
included, is ``Cache-Control: no-store``: web.security's RequestGuard sets it under /admin/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.security import HTTPBasic
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from tokenward.app.resource_servers import ClientService
from tokenward.app.user_admin import ManagedUser
from tokenward.core.events import Actor, ActorKind
from tokenward.core.roles import MAX_PERMISSIONS, PERMISSION_PATTERN, ROLE_NAME_PATTERN, Role
from tokenward.core.scopes import AdminScope, allows
from tokenward.core.users import MAX_EMAIL_LENGTH
from tokenward.exceptions import (
    ClientAuthenticationError,
    EmailTakenError,
    InsufficientScopeError,
    InvalidCursorError,
    InvalidEmailError,
    InvalidMetadataError,
    InvalidRoleError,
    PasswordPolicyError,
    UnknownRoleError,
    UnknownUserError,
)
from tokenward.infra.ratelimit import Limit
from tokenward.web.account import EventList, EventOut, SessionList, SessionOut
from tokenward.web.deps import Client, Service
from tokenward.web.oauth import InvalidClientError, basic_credentials, get_clients
from tokenward.web.openapi import (
    BODY,
    GUARDED,
    RATE_LIMITED,
    UNAVAILABLE,
    challenge,
    declare,
    problem_response,
    unprocessable,
)
from tokenward.web.schemas import PASSWORD_SCHEMA

__all__ = ["router"]

# core.roles' syntax, stated in the document so that clients (and fuzzers) can know it; the
# check stays core's, whose answer is 422 invalid-role.
ROLE_NAME_SCHEMA: dict[str, Any] = {"pattern": f"^{ROLE_NAME_PATTERN}$"}
PERMISSION_SCHEMA: dict[str, Any] = {"pattern": f"^{PERMISSION_PATTERN}$"}


class _DeclaredBasic(HTTPBasic):
    """The security scheme, in the document only. FastAPI's HTTPBasic answers a malformed
    Basic header itself (401 invalid-token, a bare ``Basic`` challenge); admin_caller reads
    the credentials instead, so that every refusal is its 401 invalid-client."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


_basic = _DeclaredBasic(
    scheme_name="HTTPBasic", description="client_id and client_secret (RFC 6749 2.3.1)"
)


@dataclass(frozen=True, slots=True)
class AdminCaller:
    actor: Actor
    scopes: tuple[str, ...]


async def admin_caller(
    request: Request,
    service: Service,
    client: Client,
    clients: Annotated[ClientService, Depends(get_clients)],
    _declared: Annotated[Any, Depends(_basic)],  # the security scheme, in the document
) -> AdminCaller:
    """The admin client behind the request's Basic credentials; 401 for anything else (a
    user's Bearer token included)."""
    try:
        client_id, secret = basic_credentials(request)
    except InvalidClientError:
        raise ClientAuthenticationError("no client credentials") from None
    found = await clients.authenticated(client_id, secret)
    if found is None:
        raise ClientAuthenticationError("wrong client credentials")
    await service.limits.hit(Limit.ADMIN_CLIENT, found.id)
    return AdminCaller(Actor(ActorKind.ADMIN_API, found.id, client), found.scopes)


def needs(scope: AdminScope) -> Callable[..., Awaitable[Actor]]:
    """A dependency: the calling client's actor, when its credentials grant ``scope``."""

    async def check(caller: Annotated[AdminCaller, Depends(admin_caller)]) -> Actor:
        if not allows(caller.scopes, scope):
            raise InsufficientScopeError(scope.value)
        return caller.actor

    return check


_AUTH = {
    **declare(
        ClientAuthenticationError,
        "Missing or wrong client credentials (a user's token is not one).",
        headers=challenge("Basic"),
    ),
    **declare(InsufficientScopeError, "The client's credentials lack the scope this needs."),
    **RATE_LIMITED,
    **UNAVAILABLE,
}
_NOT_FOUND = declare(UnknownUserError, "No such user (or role, or session).")
# A path or query parameter that breaks the schema (422 invalid-request).
_PARAMETERS = unprocessable()
router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses=_AUTH,
)

UserId = Annotated[str, Path(min_length=1, max_length=64)]
RoleName = Annotated[str, Path(min_length=1, max_length=64, json_schema_extra=ROLE_NAME_SCHEMA)]
EndSessions = Annotated[
    bool,
    Query(
        description="End the user's sessions too: resource servers refuse their access tokens "
        "within the revocation feed's bound, not the access token lifetime."
    ),
]


class AdminUserOut(BaseModel):
    id: str
    email: str
    created_at: datetime
    email_verified: bool
    disabled: bool
    roles: list[str]
    scope: str = Field(description="The roles' permissions, space-separated, as in the token.")
    app_metadata: dict[str, Any]
    user_metadata: dict[str, Any]


def _user(managed: ManagedUser) -> AdminUserOut:
    account = managed.account
    return AdminUserOut(
        id=account.id,
        email=account.email,
        created_at=account.created_at,
        email_verified=account.email_verified_at is not None,
        disabled=account.disabled,
        roles=list(managed.grants.roles),
        scope=managed.grants.scope,
        app_metadata=dict(account.app_metadata),
        user_metadata=dict(account.user_metadata),
    )


class UserPageOut(BaseModel):
    users: list[AdminUserOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(
        max_length=MAX_EMAIL_LENGTH * 2,
        examples=["ada@example.com"],
        json_schema_extra={"format": "email"},  # documents it; the check is email-validator's
    )
    password: str | None = Field(
        default=None,
        max_length=1024,
        json_schema_extra=PASSWORD_SCHEMA,
        description="Left out: the user chooses one through a mailed invitation link.",
    )
    email_verified: bool = False
    app_metadata: dict[str, Any] | None = None
    roles: list[Annotated[str, Field(json_schema_extra=ROLE_NAME_SCHEMA)]] = Field(
        default_factory=list, max_length=50, description="Needs the admin:roles scope too."
    )
    send_invitation: bool | None = Field(
        default=None, description="Without a password: mail an invitation (default: if mail is on)."
    )


class Disabled(BaseModel):
    sessions_ended: int


class Ended(BaseModel):
    ended: int


class RoleOut(BaseModel):
    name: str
    permissions: list[str]
    created_at: datetime


class RolesOut(BaseModel):
    roles: list[RoleOut]


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permissions: list[
        Annotated[str, Field(max_length=128, json_schema_extra=PERMISSION_SCHEMA)]
    ] = Field(default_factory=list, max_length=MAX_PERMISSIONS)


def _role(role: Role) -> RoleOut:
    return RoleOut(name=role.name, permissions=list(role.permissions), created_at=role.created_at)


# -- users ----------------------------------------------------------------------------------


@router.get(
    "/users",
    response_model=UserPageOut,
    responses={
        **declare(InvalidCursorError, "The cursor is not one this server handed out."),
        **unprocessable(),
    },
)
async def list_users(
    service: Service,
    _actor: Annotated[Actor, Depends(needs(AdminScope.USERS_READ))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    email_prefix: Annotated[str | None, Query(max_length=MAX_EMAIL_LENGTH)] = None,
) -> UserPageOut:
    """Users in creation order, a page at a time (stable while users are created)."""
    page = await service.user_admin.page(cursor=cursor, email_prefix=email_prefix, limit=limit)
    return UserPageOut(users=[_user(u) for u in page.users], next_cursor=page.next_cursor)


@router.post(
    "/users",
    status_code=201,
    response_model=AdminUserOut,
    responses={
        **BODY,
        **_NOT_FOUND,
        **declare(EmailTakenError, "An account with this email already exists."),
        **unprocessable(
            InvalidEmailError.problem,
            PasswordPolicyError.problem,
            InvalidMetadataError.problem,
            InvalidRoleError.problem,
        ),
    },
)
async def create_user(
    body: NewUser,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.USERS))],
    caller: Annotated[AdminCaller, Depends(admin_caller)],
) -> AdminUserOut:
    """A new user, with a password or with an invitation to choose one."""
    if body.roles and not allows(caller.scopes, AdminScope.ROLES):
        raise InsufficientScopeError(AdminScope.ROLES.value)
    created = await service.user_admin.create(
        body.email,
        actor,
        password=body.password,
        email_verified=body.email_verified,
        app_metadata=body.app_metadata,
        roles=body.roles,
        send_invitation=body.send_invitation,
    )
    return _user(created)


@router.get(
    "/users/{user_id}", response_model=AdminUserOut, responses={**_NOT_FOUND, **_PARAMETERS}
)
async def get_user(
    user_id: UserId,
    service: Service,
    _actor: Annotated[Actor, Depends(needs(AdminScope.USERS_READ))],
) -> AdminUserOut:
    return _user(await service.user_admin.get(user_id))


@router.delete("/users/{user_id}", status_code=204, responses={**GUARDED, **_NOT_FOUND})
async def delete_user(
    user_id: UserId,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.USERS))],
) -> None:
    """Delete the user: sessions ended (the revocation feed carries them), a mail sent."""
    await service.user_admin.delete(user_id, actor)


class FactorsRemoved(BaseModel):
    removed: int


@router.delete(
    "/users/{user_id}/factors", response_model=FactorsRemoved, responses={**GUARDED, **_NOT_FOUND}
)
async def reset_factors(
    user_id: UserId,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.USERS))],
) -> FactorsRemoved:
    """Remove every second factor of the user (and their recovery codes): the next sign-in
    asks for the password alone. The user is mailed; the event names the client."""
    return FactorsRemoved(removed=await service.mfa.reset(user_id, actor))


@router.post(
    "/users/{user_id}/disable", response_model=Disabled, responses={**GUARDED, **_NOT_FOUND}
)
async def disable_user(
    user_id: UserId,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.USERS))],
) -> Disabled:
    """Disable the user: every session ends, mailed links stop working."""
    return Disabled(sessions_ended=await service.user_admin.set_disabled(user_id, True, actor))


@router.post("/users/{user_id}/enable", status_code=204, responses={**GUARDED, **_NOT_FOUND})
async def enable_user(
    user_id: UserId,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.USERS))],
) -> None:
    await service.user_admin.set_disabled(user_id, False, actor)


@router.put(
    "/users/{user_id}/app_metadata",
    response_model=AdminUserOut,
    responses={**BODY, **_NOT_FOUND, **unprocessable(InvalidMetadataError.problem)},
)
async def set_app_metadata(
    user_id: UserId,
    metadata: Annotated[dict[str, Any], Body(description="Replaces it whole.")],
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.USERS))],
) -> AdminUserOut:
    """Replace the user's app_metadata (what the claims hook may read; never user-editable)."""
    return _user(await service.user_admin.set_app_metadata(user_id, metadata, actor))


@router.get(
    "/users/{user_id}/events", response_model=EventList, responses={**_NOT_FOUND, **_PARAMETERS}
)
async def user_events(
    user_id: UserId,
    service: Service,
    _actor: Annotated[Actor, Depends(needs(AdminScope.USERS_READ))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> EventList:
    events = await service.user_admin.events(user_id, limit=limit)
    return EventList(events=[EventOut.model_validate(e, from_attributes=True) for e in events])


# -- roles ----------------------------------------------------------------------------------


@router.put(
    "/users/{user_id}/roles/{role}",
    status_code=204,
    responses={**GUARDED, **_NOT_FOUND, **unprocessable(InvalidRoleError.problem)},
)
async def grant_role(
    user_id: UserId,
    role: RoleName,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.ROLES))],
    end_sessions: EndSessions = False,
) -> None:
    """Give the user the role (nothing to do if they hold it): in their next access token."""
    await service.roles.grant(user_id, role, actor, end_sessions=end_sessions)


@router.delete(
    "/users/{user_id}/roles/{role}",
    status_code=204,
    responses={**GUARDED, **_NOT_FOUND, **unprocessable(InvalidRoleError.problem)},
)
async def revoke_role(
    user_id: UserId,
    role: RoleName,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.ROLES))],
    end_sessions: EndSessions = False,
) -> None:
    """Take the role from the user (404 if they do not hold it)."""
    await service.roles.revoke(user_id, role, actor, end_sessions=end_sessions)


@router.get("/roles", response_model=RolesOut)
async def list_roles(
    service: Service, _actor: Annotated[Actor, Depends(needs(AdminScope.ROLES))]
) -> RolesOut:
    return RolesOut(roles=[_role(role) for role in await service.roles.list()])


@router.put(
    "/roles/{role}",
    response_model=RoleOut,
    responses={
        201: {"description": "Created.", "model": RoleOut},
        **BODY,
        **unprocessable(InvalidRoleError.problem),
    },
)
async def put_role(
    role: RoleName,
    body: RoleIn,
    response: Response,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.ROLES))],
) -> RoleOut:
    """Create the role, or replace the permissions it grants (200)."""
    saved, created = await service.roles.put(role, body.permissions, actor)
    if created:
        response.status_code = 201
    return _role(saved)


@router.delete("/roles/{role}", status_code=204, responses={**GUARDED, **_NOT_FOUND})
async def delete_role(
    role: RoleName,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.ROLES))],
    end_sessions: EndSessions = False,
) -> None:
    """Delete the role; its holders lose it at their next refresh (or at once, with
    ``end_sessions``)."""
    if not await service.roles.delete(role, actor, end_sessions=end_sessions):
        raise UnknownRoleError(f"no role {role!r}")


# -- sessions -------------------------------------------------------------------------------


@router.get(
    "/users/{user_id}/sessions",
    response_model=SessionList,
    responses={**_NOT_FOUND, **_PARAMETERS},
)
async def list_sessions(
    user_id: UserId,
    service: Service,
    _actor: Annotated[Actor, Depends(needs(AdminScope.SESSIONS))],
) -> SessionList:
    sessions = await service.user_admin.sessions(user_id)
    return SessionList(
        sessions=[SessionOut.model_validate(s, from_attributes=True) for s in sessions]
    )


@router.delete(
    "/users/{user_id}/sessions", response_model=Ended, responses={**GUARDED, **_NOT_FOUND}
)
async def revoke_sessions(
    user_id: UserId,
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.SESSIONS))],
) -> Ended:
    """End every session of the user (the revocation feed carries them)."""
    return Ended(ended=await service.user_admin.revoke_sessions(user_id, actor))


@router.delete(
    "/users/{user_id}/sessions/{session_id}",
    status_code=204,
    responses={
        **GUARDED,
        404: problem_response(404, "No such live session of this user.", "not-found"),
    },
)
async def revoke_session(
    user_id: UserId,
    session_id: Annotated[str, Path(min_length=1, max_length=64)],
    service: Service,
    actor: Annotated[Actor, Depends(needs(AdminScope.SESSIONS))],
) -> None:
    if not await service.user_admin.revoke_sessions(user_id, actor, only=session_id):
        raise UnknownUserError("no such session")
