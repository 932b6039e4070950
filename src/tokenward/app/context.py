"""What every use case shares: the one wiring of settings, storage, clock, codecs and limits.

Built once per process by :class:`tokenward.app.service.AuthService` (the app, the CLI and
embedding all open that), and handed to each capability module.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from tokenward.core.claims import ClaimsHook
from tokenward.core.keys import Keyring
from tokenward.core.passwords import PasswordHasher, PasswordPolicy
from tokenward.core.refresh import RefreshTokenCodec
from tokenward.core.sessions import SessionLifetimes
from tokenward.core.tokens import AccessTokenCodec
from tokenward.infra import metrics
from tokenward.infra.config import Settings
from tokenward.infra.ratelimit import RateLimiter
from tokenward.storage import Database
from tokenward.storage.keys import KeyStore
from tokenward.storage.port import Store
from tokenward.storage.sql import SqlStore
from tokenward.verify import SYSTEM_CLOCK, Clock

__all__ = ["HASH_CONCURRENCY", "SYSTEM_CLOCK", "Clock", "Context", "wall_time"]

T = TypeVar("T")
HASH_CONCURRENCY = max(1, (os.cpu_count() or 1) - 1)
"""Password hashes computed at once per process: one core stays free for everything else."""


def wall_time(clock: Clock) -> datetime:
    """What ``clock`` says the time is, aware and in UTC.

    ``Clock`` is the one clock type, the verifier's (``tokenward.verify.Clock``: ``time()``
    and ``monotonic()``): the server, the verifier and their tests take the same one, passed
    in and never read deep inside; ``tokenward.testing.FakeClock`` moves by hand."""
    return datetime.fromtimestamp(clock.time(), UTC)


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
        outbox_key: bytes | None = None,
        mfa_key: bytes | None = None,
        hasher: PasswordHasher | None = None,
        clock: Clock = SYSTEM_CLOCK,
        claims_hook: ClaimsHook | None = None,
    ) -> None:
        self.settings = settings
        self.claims_hook = claims_hook
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
        # Fernet's key (urlsafe base64 of 32 bytes) that seals queued mails' payloads.
        self.outbox_key = base64.urlsafe_b64encode(
            outbox_key if outbox_key is not None else hashlib.sha256(refresh_secret).digest()
        )
        # Fernet's key that seals TOTP secrets at rest.
        self.mfa_key = base64.urlsafe_b64encode(
            mfa_key
            if mfa_key is not None
            else hashlib.sha256(b"tokenward mfa secrets v1" + refresh_secret).digest()
        )
        self.lifetimes = SessionLifetimes(
            idle=settings.refresh_ttl, absolute=settings.session_max_age
        )
        self.limits = RateLimiter(settings)
        self.hash_slots = asyncio.Semaphore(HASH_CONCURRENCY)

    def now(self) -> datetime:
        """The current time by the clock this context was given."""
        return wall_time(self.clock)

    async def hashed(self, work: Callable[..., T], *args: Any) -> T:
        """Run a password hash (argon2id: ~0.25 CPU-s, 64 MiB) in a thread, a few at a time.

        The soak showed a login flood with one hash per request starving the event loop: every
        other request waited seconds for CPU. Queued logins wait instead; the rest stay fast.
        """
        observed = metrics.current()
        queued = self.clock.monotonic()
        with observed.hash_queued():
            await self.hash_slots.acquire()
        try:
            started = self.clock.monotonic()
            result = await asyncio.to_thread(work, *args)
            observed.hashed(started - queued, self.clock.monotonic() - started)
            return result
        finally:
            self.hash_slots.release()
