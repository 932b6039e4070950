"""Embedding: mount tokenward inside your own FastAPI or Starlette app, one process.

    identity = create_app(settings, claims_hook=my_claims)   # the hook: optional

    @asynccontextmanager
    async def lifespan(app):
        async with tokenward_lifespan(identity):   # opens the database, keys, housekeeping
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/id", identity)                     # /id/auth/login, /id/.well-known/jwks.json
    current_user = embedded_user(identity)         # Depends(current_user) on your own routes

Starlette does not run a mounted app's lifespan, hence the hook. The refresh cookie's path
follows the mount point (``/id/auth``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from tokenward.app.service import AuthService, Principal
from tokenward.exceptions import TokenError

__all__ = ["embedded_user", "tokenward_lifespan"]

# Module level: FastAPI resolves the (string) annotations of dependencies in module globals.
BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))
]


@asynccontextmanager
async def tokenward_lifespan(identity: FastAPI) -> AsyncIterator[None]:
    """Run the embedded tokenward app's start-up and shut-down inside the host's lifespan."""
    async with identity.router.lifespan_context(identity):
        yield


def embedded_user(identity: FastAPI) -> Callable[..., Awaitable[Principal]]:
    """A dependency for the host's routes: the caller's Principal, checked in-process
    (signature, claims and a live session) with no HTTP round trip."""

    async def current_user(credentials: BearerCredentials) -> Principal:
        if credentials is None:
            raise HTTPException(401, headers={"WWW-Authenticate": 'Bearer realm="tokenward"'})
        service: AuthService = identity.state.service
        try:
            return await service.sessions.authenticate(credentials.credentials)
        except TokenError:
            challenge = 'Bearer realm="tokenward", error="invalid_token"'
            raise HTTPException(401, headers={"WWW-Authenticate": challenge}) from None

    return current_user
