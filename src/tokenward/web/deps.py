"""Request dependencies shared by the routers: the service, the caller, the client."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from starlette.exceptions import HTTPException

from tokenward.app.service import AuthService, Principal
from tokenward.core.events import ClientInfo
from tokenward.core.tokens import MAX_TOKEN_LENGTH
from tokenward.exceptions import TokenError
from tokenward.infra.clientip import ProxyTrust
from tokenward.infra.config import Settings
from tokenward.infra.logs import note_identity
from tokenward.web.security import is_allowed_origin

__all__ = ["NO_STORE", "Client", "CurrentUser", "SameOrigin", "Service", "bearer_challenge"]

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


async def get_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.service
    return service


Service = Annotated[AuthService, Depends(get_service)]


async def client_info(request: Request) -> ClientInfo:
    """The caller's IP (through trusted proxies only) and User-Agent."""
    proxies: ProxyTrust = request.app.state.proxy_trust
    peer = request.client.host if request.client else None
    return ClientInfo(
        ip=proxies.client_ip(peer, request.headers.getlist("x-forwarded-for")),
        user_agent=request.headers.get("user-agent"),
    )


Client = Annotated[ClientInfo, Depends(client_info)]


async def same_origin(request: Request) -> None:
    """CSRF defence for the endpoints a cookie authorises (or sets): see is_allowed_origin."""
    settings: Settings = request.app.state.settings
    issuer = urlsplit(settings.issuer)
    if not is_allowed_origin(
        request,
        request.app.state.proxy_trust,
        settings.allowed_origins,
        public=f"{issuer.scheme}://{issuer.netloc}",
    ):
        raise HTTPException(403, "cross-origin request refused")


SameOrigin = Depends(same_origin)


def bearer_challenge(error: bool) -> HTTPException:
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
        raise bearer_challenge(error=False)
    if len(header) > MAX_TOKEN_LENGTH + len("Bearer ") or token is None:
        raise bearer_challenge(error=True)
    try:
        principal = await service.sessions.authenticate(token)
    except TokenError:
        raise bearer_challenge(error=True) from None
    note_identity(principal.user.id, principal.session_id)
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
