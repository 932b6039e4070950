"""What every use case shares: the one wiring of settings, storage, clock, codecs and limits.

Built once per process by :class:`tokenward.app.service.AuthService` (the app, the CLI and
embedding all open that), and handed to each capability module.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from tokenward.core.keys import Keyring
from tokenward.core.passwords import PasswordHasher, PasswordPolicy
from tokenward.core.refresh import RefreshTokenCodec
from tokenward.core.sessions import SessionLifetimes
from tokenward.core.tokens import AccessTokenCodec
from tokenward.infra.config import Settings
from tokenward.infra.ratelimit import RateLimiter
from tokenward.storage import Database
from tokenward.storage.keys import KeyStore
from tokenward.storage.port import Store
from tokenward.storage.sql import SqlStore

__all__ = ["HASH_CONCURRENCY", "Clock", "Context", "utcnow"]

Clock = Callable[[], datetime]
"""The one clock type: the current time, aware and in UTC. Passed in, never read deep inside."""
T = TypeVar("T")
HASH_CONCURRENCY = max(1, (os.cpu_count() or 1) - 1)
"""Password hashes computed at once per process: one core stays free for everything else."""


def utcnow() -> datetime:
    """The system clock, for production wiring."""
    return datetime.now(UTC)


class Context:
    """Settings, storage, the clock, the hasher, the token codecs and the rate limiter."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        keys: KeyStore,
        keyring: Keyring,
        refresh_secret: bytes,
        hasher: PasswordHasher | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store: Store = SqlStore(db)
        self.keys = keys
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        self.policy = PasswordPolicy(min_length=settings.password_min_length)
        self.access = AccessTokenCodec(
            keyring,
            issuer=settings.issuer,
            audience=settings.audience,
            ttl=settings.access_ttl,
        )
        self.refresh_tokens = RefreshTokenCodec(refresh_secret)
        self.lifetimes = SessionLifetimes(
            idle=settings.refresh_ttl, absolute=settings.session_max_age
        )
        self.limits = RateLimiter(settings)
        self.hash_slots = asyncio.Semaphore(HASH_CONCURRENCY)

    async def hashed(self, work: Callable[..., T], *args: Any) -> T:
        """Run a password hash (argon2id: ~0.25 CPU-s, 64 MiB) in a thread, a few at a time.

        The soak showed a login flood with one hash per request starving the event loop: every
        other request waited seconds for CPU. Queued logins wait instead; the rest stay fast.
        """
        async with self.hash_slots:
            return await asyncio.to_thread(work, *args)
