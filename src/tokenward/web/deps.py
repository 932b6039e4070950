"""Request dependencies shared by the routers: the service, the caller, the client."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from starlette.exceptions import HTTPException

from tokenward.audit import ClientInfo
from tokenward.exceptions import TokenError
from tokenward.service import AuthService, Principal
from tokenward.tokens import MAX_TOKEN_LENGTH
from tokenward.web.problems import PROBLEM_JSON

__all__ = ["NO_STORE", "PROBLEM_RESPONSE", "Client", "CurrentUser", "Service"]

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PROBLEM_RESPONSE: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def get_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.service
    return service


Service = Annotated[AuthService, Depends(get_service)]


def client_info(request: Request) -> ClientInfo:
    return ClientInfo(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


Client = Annotated[ClientInfo, Depends(client_info)]


def _bearer_challenge(error: bool) -> HTTPException:
    # RFC 6750 3.1: no error code when the request carried no credentials at all.
    value = 'Bearer realm="tokenward"' + (', error="invalid_token"' if error else "")
    detail = "invalid_token" if error else "authentication required"
    return HTTPException(401, detail, headers={"WWW-Authenticate": value})


async def current_user(
    request: Request, service: Service, token: Annotated[str | None, Depends(_bearer)]
) -> Principal:
    """The user behind a valid access token whose session is alive (the protected route)."""
    header = request.headers.get("authorization")
    if header is None:
        raise _bearer_challenge(error=False)
    if token is None or len(header) > MAX_TOKEN_LENGTH + 16:
        raise _bearer_challenge(error=True)
    try:
        return await service.authenticate(token)
    except TokenError:
        raise _bearer_challenge(error=True) from None


CurrentUser = Annotated[Principal, Depends(current_user)]
