"""A notes API that trusts tokenward's access tokens (FastAPI).

With tokenward running (`make run`, on http://127.0.0.1:8000):

    TOKENWARD_ISSUER=http://127.0.0.1:8000 .venv/bin/uvicorn --app-dir examples \\
        fastapi_app:app --port 8001
    curl -H "Authorization: Bearer $ACCESS" http://127.0.0.1:8001/me
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from tokenward.verify import Claims, Verifier
from tokenward.verify.fastapi import require_roles, require_scopes


def create_app(verifier: Verifier) -> FastAPI:
    """The API, its routes protected by ``verifier``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await verifier.awarm_up()  # keys fetched before the first request (logged if not)
        yield
        await verifier.aclose()

    app = FastAPI(title="notes", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True, "verifier_ready": verifier.ready}

    @app.get("/me")
    async def me(user: Annotated[Claims, Depends(verifier)]) -> dict[str, Any]:
        return {"sub": user.sub, "sid": user.sid, "scope": list(user.scope)}

    @app.get("/notes")
    async def notes(
        user: Annotated[Claims, Depends(require_scopes(verifier, "notes:read"))],
    ) -> dict[str, Any]:
        return {"owner": user.sub, "notes": ["buy milk"]}

    @app.delete("/notes")
    async def purge(
        user: Annotated[Claims, Depends(require_roles(verifier, "admin"))],
    ) -> dict[str, Any]:
        return {"purged_by": user.sub}

    return app


ISSUER = os.environ.get("TOKENWARD_ISSUER", "http://127.0.0.1:8000")
app = create_app(Verifier(issuer=ISSUER, audience=os.environ.get("TOKENWARD_AUDIENCE")))
