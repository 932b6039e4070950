"""A notes API that trusts tokenward's access tokens (Starlette, or any ASGI app).

With tokenward running (`make run`, on http://127.0.0.1:8000):

    TOKENWARD_ISSUER=http://127.0.0.1:8000 .venv/bin/uvicorn --app-dir examples \\
        starlette_app:app --port 8002
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenward.verify import Claims, Verifier, challenge
from tokenward.verify.starlette import BearerAuthMiddleware


def create_app(verifier: Verifier) -> Starlette:
    """The API; every path but /healthz needs a valid token."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "verifier_ready": verifier.ready})

    async def me(request: Request) -> JSONResponse:
        claims: Claims = request.state.claims
        return JSONResponse({"sub": claims.sub, "sid": claims.sid})

    async def notes(request: Request) -> JSONResponse:
        claims: Claims = request.state.claims
        if not claims.has_scopes("notes:read"):
            header = challenge(verifier.realm, "insufficient_scope", ["notes:read"])
            return JSONResponse(
                {"detail": "insufficient scope"}, 403, headers={"WWW-Authenticate": header}
            )
        return JSONResponse({"owner": claims.sub, "notes": ["buy milk"]})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await verifier.awarm_up()
        yield
        await verifier.aclose()

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/me", me), Route("/notes", notes)],
        middleware=[Middleware(BearerAuthMiddleware, verifier=verifier, public_paths=["/healthz"])],
        lifespan=lifespan,
    )


app = create_app(Verifier(issuer=os.environ.get("TOKENWARD_ISSUER", "http://127.0.0.1:8000")))
