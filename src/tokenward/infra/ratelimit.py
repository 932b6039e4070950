"""Rate limits (the ``limits`` library): in-process by default, Redis when configured.

Login and password checks count *failures* per account+IP and per account, plus every attempt
per IP; registration and refresh count every request. A password check reserves its failure
before the hash runs and gives it back when the password was right, so concurrent guesses
cannot all pass a check made before any of them was counted. A limit that is exhausted refuses
the request before any password is verified, so a locked account never reveals whether the
password was right. Clients are counted by address, IPv6 ones by network (/64 by default):
one host holds a whole /64.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Any, cast

from limits import RateLimitItem, parse
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from tokenward.exceptions import ConfigError, RateLimitedError, UnavailableError
from tokenward.infra import metrics
from tokenward.infra.config import Settings

__all__ = ["REDIS_TIMEOUT", "Limit", "RateLimiter", "client_key"]

REDIS_TIMEOUT = 2.0


class Limit(Enum):
    """Each limit, with the setting (``TOKENWARD_RATE_LIMIT_<NAME>``) that sets it."""

    LOGIN_FAILURES_ACCOUNT_IP = "login_failures_account_ip"
    LOGIN_FAILURES_ACCOUNT = "login_failures_account"
    LOGIN_IP = "login_ip"
    REGISTER_IP = "register_ip"
    REFRESH_IP = "refresh_ip"
    REFRESH_SESSION = "refresh_session"
    PASSWORD_CHANGE_ACCOUNT = "password_change_account"  # noqa: S105 - a limit's name
    USER_ACTIONS = "user_actions"
    EMAIL_ADDRESS = "email_address"
    """Mails to one (normalised) address, whether or not it has an account."""
    EMAIL_IP = "email_ip"
    """Requests that may send a mail, per client IP."""
    EMAIL_COOLDOWN = "email_cooldown"
    """One mail of a kind per address per ``TOKENWARD_EMAIL_RESEND_COOLDOWN``."""
    ADMIN_CLIENT = "admin_client"
    """Admin API requests per client id."""
    MFA_FAILURES_ACCOUNT = "mfa_failures_account"
    """Wrong second-factor codes per user."""


def client_key(ip: str | None, ipv6_prefix: int = 64) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its ``/ipv6_prefix``.

    An IPv4-mapped IPv6 address counts as its IPv4 address. Anything unparseable is counted
    as itself (it came from the socket or a trusted proxy, so it is not attacker-chosen).
    """
    if not ip:
        return "unknown"
    try:
        address = ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ip_network(f"{address}/{ipv6_prefix}", strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class _Rule:
    item: RateLimitItem
    prefix: str


class RateLimiter:
    """One instance per process; the storage is shared by every instance when it is Redis."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits
        self.ipv6_prefix = settings.rate_limit_ipv6_prefix
        self._pool: Any = None
        if settings.redis_url:
            try:
                from redis.asyncio import ConnectionPool
            except ModuleNotFoundError:
                raise ConfigError(
                    "TOKENWARD_REDIS_URL needs the redis driver: pip install 'tokenward[redis]'"
                ) from None

            # Our own pool, so that close() can release its connections at shutdown. Short
            # timeouts: a Redis that is gone must give a quick 503, not a hung request.
            self._pool = ConnectionPool.from_url(
                settings.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
            )
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

    async def hit(self, limit: Limit, *key: str) -> None:
        """Count one request; raise :class:`RateLimitedError` if it goes over the limit."""
        if not self.enabled:
            return
        rule = self._rules[limit]
        async with self._storage_errors():
            allowed = await self._limiter.hit(rule.item, rule.prefix, *key)
        if not allowed:
            await self._refuse(rule, key)

    def client(self, ip: str | None) -> str:
        """The key this limiter counts the client at ``ip`` by (see :func:`client_key`)."""
        return client_key(ip, self.ipv6_prefix)

    async def reserve(self, *limits: tuple[Limit, tuple[str, ...]]) -> None:
        """Count one against each limit now; raise :class:`RateLimitedError` if any is over.

        Used before work whose outcome decides whether it counts (a password check): what is
        already reserved is given back when a later limit refuses.
        """
        taken: list[tuple[Limit, tuple[str, ...]]] = []
        try:
            for limit, key in limits:
                await self.hit(limit, *key)
                taken.append((limit, key))
        except RateLimitedError:
            for limit, key in taken:
                await self.refund(limit, *key)
            raise

    async def refund(self, limit: Limit, *key: str) -> None:
        """Give back one hit of ``limit`` (a reservation that turned out not to count).

        A negative hit: both storages add the amount to the current window's counter.
        """
        if not self.enabled:
            return
        rule = self._rules[limit]
        async with self._storage_errors():
            await self._limiter.hit(rule.item, rule.prefix, *key, cost=-1)

    async def clear(self, limit: Limit, *key: str) -> None:
        if self.enabled:
            rule = self._rules[limit]
            async with self._storage_errors():
                await self._limiter.clear(rule.item, rule.prefix, *key)

    async def ping(self) -> None:
        """Raise :class:`UnavailableError` unless the shared store (Redis) answers."""
        if self._pool is None:
            return
        async with self._storage_errors():
            if not await self._storage.check():
                raise ConnectionError("no answer to PING")

    @asynccontextmanager
    async def _storage_errors(self) -> AsyncIterator[None]:
        # Fail closed: without its counters the limiter cannot say yes, so the request gets a
        # 503 (and changes nothing) rather than slipping past the limit.
        try:
            yield
        except RateLimitedError:
            raise
        except Exception as error:
            if self._pool is None:
                raise
            raise UnavailableError("redis", type(error).__name__) from error

    async def _refuse(self, rule: _Rule, key: tuple[str, ...]) -> None:
        async with self._storage_errors():
            stats = await self._limiter.get_window_stats(rule.item, rule.prefix, *key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        metrics.current().rate_limited(rule.prefix)
        raise RateLimitedError(retry_after)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
