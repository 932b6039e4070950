"""tokenward inside your own FastAPI app: one process, one database.

uvicorn examples.embedded_fastapi:app --port 8000
# register and log in under /id/auth/..., then call /orders with the access token
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI

from tokenward.app.service import Principal
from tokenward.infra.config import load_settings
from tokenward.web import create_app
from tokenward.web.embed import embedded_user, tokenward_lifespan

identity = create_app(load_settings())
current_user = embedded_user(identity)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with tokenward_lifespan(identity):
        yield


app = FastAPI(title="orders", lifespan=lifespan)
app.mount("/id", identity)


@app.get("/orders")
async def orders(user: Annotated[Principal, Depends(current_user)]) -> dict[str, object]:
    return {"owner": user.user.email, "orders": []}
