"""Endpoints for resource servers: RFC 7662 introspection, RFC 7009 revocation, the revocation
feed, and RFC 8414 server metadata."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import JSONResponse

from tokenward.app.resource_servers import ClientService
from tokenward.web.deps import NO_STORE, Client, Service
from tokenward.web.openapi import BODY, CLIENT, UNAVAILABLE, unprocessable
from tokenward.web.schemas import Introspection, OAuthError, RevocationFeed, ServerMetadata

__all__ = ["router"]

router = APIRouter()
_FORM_ENDPOINT: dict[int | str, dict[str, Any]] = {**BODY, **CLIENT, **UNAVAILABLE}
_ANY_STRING_HELP = (
    "Any string: an unknown or invalid token is not an error. The body cap (413) counts bytes, "
    "so a token of many multi-byte characters meets it before the 8192-character limit."
)


class InvalidClientError(Exception):
    """Missing or wrong client credentials: RFC 6749 invalid_client with a Basic challenge."""


async def get_clients(request: Request) -> ClientService:
    clients: ClientService = request.app.state.clients
    return clients


Clients = Annotated[ClientService, Depends(get_clients)]


def basic_credentials(request: Request) -> tuple[str, str]:
    """(client_id, client_secret) of the request's Basic credentials; InvalidClientError."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 1024:
        raise InvalidClientError
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClientError from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClientError
    # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote(client_id), unquote(secret)


async def authenticated_client(request: Request, clients: Clients) -> str:
    client_id, secret = basic_credentials(request)
    if not await clients.authenticate(client_id, secret):
        raise InvalidClientError
    return client_id


def invalid_client_response() -> JSONResponse:
    return JSONResponse(
        {"error": "invalid_client", "error_description": "client authentication failed"},
        status_code=401,
        headers={**NO_STORE, "WWW-Authenticate": 'Basic realm="tokenward"'},
    )


ResourceServer = Annotated[str, Depends(authenticated_client)]


@router.post("/auth/introspect", response_model=Introspection, responses=_FORM_ENDPOINT)
async def introspect(
    _client: ResourceServer,
    clients: Clients,
    token: Annotated[str, Form(max_length=8192, description=_ANY_STRING_HELP)] = "",
    token_type_hint: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    """RFC 7662: is this token active, and whose is it?"""
    answer = await clients.introspect(token, token_type_hint) if token else {"active": False}
    return JSONResponse(answer, headers=NO_STORE)


@router.post(
    "/auth/revoke",
    response_class=Response,  # documents the 200's empty body; the route returns its own
    responses={**_FORM_ENDPOINT, 200: {"description": "Revoked, or nothing to revoke."}},
)
async def revoke(
    _client: ResourceServer,
    clients: Clients,
    client: Client,
    token: Annotated[str, Form(max_length=8192, description=_ANY_STRING_HELP)] = "",
    token_type_hint: Annotated[str | None, Form()] = None,
) -> Response:
    """RFC 7009: end the token's session. 200 whether or not the token was valid."""
    del token_type_hint  # both kinds are tried; the hint only orders the attempts
    if token:
        await clients.revoke(token, client)
    return Response(status_code=200, headers=NO_STORE)


@router.get(
    "/auth/revocations",
    response_model=RevocationFeed,
    responses={
        **CLIENT,
        400: {
            "description": "invalid_request: the cursor is not one of ours.",
            "model": OAuthError,
        },
        **unprocessable(),
        **UNAVAILABLE,
    },
)
async def revocations(
    _client: ResourceServer,
    clients: Clients,
    after: Annotated[
        str | None,
        Query(
            max_length=100,
            description="The `cursor` of the previous answer (empty: the whole window). One "
            "that does not parse, or that this server never handed out, is 400 "
            "invalid_request: start again without one.",
            # The cursor parser's syntax: a revocation log number.
            json_schema_extra={"pattern": r"^[0-9]{0,18}$"},
        ),
    ] = None,
) -> JSONResponse:
    """Sessions ended since ``after`` (the cursor of the previous answer)."""
    try:
        page = await clients.revocations(after)
    except ValueError:
        return JSONResponse(
            {"error": "invalid_request", "error_description": "bad cursor"}, status_code=400
        )
    body: dict[str, Any] = {
        "revoked": [{"sid": r.sid, "revoked_at": r.revoked_at} for r in page.revoked],
        "cursor": page.cursor,
        "poll_interval": 2,
    }
    return JSONResponse(body, headers=NO_STORE)


@router.get("/.well-known/oauth-authorization-server", response_model=ServerMetadata)
async def metadata(service: Service) -> JSONResponse:
    """RFC 8414 authorization server metadata."""
    base = service.settings.issuer.rstrip("/")
    body = {
        "issuer": service.settings.issuer,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint": f"{base}/auth/token",
        "introspection_endpoint": f"{base}/auth/introspect",
        "revocation_endpoint": f"{base}/auth/revoke",
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic"],
        "scopes_supported": [],
    }
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=3600"})
