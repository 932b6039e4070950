"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tokenward import __version__
from tokenward.admin import Admin
from tokenward.config import Settings, load_settings
from tokenward.passwords import PasswordHasher
from tokenward.service import AuthService, Clock, utcnow
from tokenward.web import account, routes
from tokenward.web.problems import install_problem_handlers

__all__ = ["create_app", "prune_forever"]

_log = logging.getLogger("tokenward")


async def prune_forever(service: AuthService) -> None:
    """Keep tables bounded by live sessions: prune on start, then every prune_interval."""
    admin = Admin(service)
    while True:
        try:
            report = await admin.prune()
            if report.sessions or report.events:
                _log.info("pruned %d sessions and %d events", report.sessions, report.events)
        except Exception as exc:  # the next round tries again; the server stays up
            _log.warning("pruning failed: %s", type(exc).__name__)
        await asyncio.sleep(service.settings.prune_interval.total_seconds())


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = utcnow,
    hasher: PasswordHasher | None = None,
) -> FastAPI:
    """Build the app; the service (database, keys, migrations) opens in the lifespan.

    ``clock`` and ``hasher`` are for embedding and tests (a fake clock, cheaper argon2).
    """
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await AuthService.open(settings, clock=clock, hasher=hasher)
        app.state.service = service
        housekeeping = asyncio.create_task(prune_forever(service))
        try:
            yield
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await service.close()

    app = FastAPI(
        title="tokenward",
        version=__version__,
        summary="Short-lived JWT access tokens and rotating refresh tokens.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(routes.router)
    app.include_router(account.router)
    return app
