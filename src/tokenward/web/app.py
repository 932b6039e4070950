"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tokenward import __version__
from tokenward.config import Settings, load_settings
from tokenward.service import AuthService, Clock, utcnow
from tokenward.web.problems import install_problem_handlers
from tokenward.web.routes import router

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, clock: Clock = utcnow) -> FastAPI:
    """Build the app; the service (database, keys, migrations) opens in the lifespan."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await AuthService.open(settings, clock=clock)
        app.state.service = service
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="tokenward",
        version=__version__,
        summary="Short-lived JWT access tokens and rotating refresh tokens.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(router)
    return app
