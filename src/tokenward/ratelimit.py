"""Rate limits (the ``limits`` library): in-process by default, Redis when configured.

Login and password checks count *failures* per account+IP and per account, plus every attempt
per IP; registration and refresh count every request. A limit that is exhausted refuses the
request before any password is verified, so a locked account never reveals whether the
password was right.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from limits import RateLimitItem, parse
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from tokenward.config import Settings
from tokenward.exceptions import ConfigError, RateLimitedError

__all__ = ["Limit", "RateLimiter"]


class Limit(Enum):
    """Each limit, with the setting (``TOKENWARD_RATE_LIMIT_<NAME>``) that sets it."""

    LOGIN_FAILURES_ACCOUNT_IP = "login_failures_account_ip"
    LOGIN_FAILURES_ACCOUNT = "login_failures_account"
    LOGIN_IP = "login_ip"
    REGISTER_IP = "register_ip"
    REFRESH_IP = "refresh_ip"
    REFRESH_SESSION = "refresh_session"


@dataclass(frozen=True, slots=True)
class _Rule:
    item: RateLimitItem
    prefix: str


class RateLimiter:
    """One instance per process; the storage is shared by every instance when it is Redis."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits
        self._pool: Any = None
        if settings.redis_url:
            try:
                from redis.asyncio import ConnectionPool
            except ModuleNotFoundError:
                raise ConfigError(
                    "TOKENWARD_REDIS_URL needs the redis driver: pip install 'tokenward[redis]'"
                ) from None

            # Our own pool, so that close() can release its connections at shutdown.
            self._pool = ConnectionPool.from_url(settings.redis_url)
            storage = storage_from_string(
                "async+" + settings.redis_url,
                implementation="redispy",
                key_prefix="tokenward-limits",
                connection_pool=self._pool,
            )
        else:
            storage = storage_from_string("async+memory://")
        self._storage = cast(AsyncStorage, storage)
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._rules = {
            limit: _Rule(parse(getattr(settings, f"rate_limit_{limit.value}")), limit.value)
            for limit in Limit
        }

    async def check(self, limit: Limit, *key: str) -> None:
        """Raise :class:`RateLimitedError` if the limit for ``key`` is already used up."""
        if not self.enabled:
            return
        rule = self._rules[limit]
        if not await self._limiter.test(rule.item, rule.prefix, *key):
            await self._refuse(rule, key)

    async def hit(self, limit: Limit, *key: str) -> None:
        """Count one request; raise :class:`RateLimitedError` if it goes over the limit."""
        if not self.enabled:
            return
        rule = self._rules[limit]
        if not await self._limiter.hit(rule.item, rule.prefix, *key):
            await self._refuse(rule, key)

    async def clear(self, limit: Limit, *key: str) -> None:
        if self.enabled:
            rule = self._rules[limit]
            await self._limiter.clear(rule.item, rule.prefix, *key)

    async def _refuse(self, rule: _Rule, key: tuple[str, ...]) -> None:
        stats = await self._limiter.get_window_stats(rule.item, rule.prefix, *key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimitedError(retry_after)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
