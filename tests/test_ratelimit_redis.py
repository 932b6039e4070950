"""With TOKENWARD_REDIS_URL, every instance counts against the same limits (a real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager
from support import FAST_HASHER, LIFESPAN_TIMEOUT, PASSWORD, make_settings

from tokenward.web import create_app

# In-process instances with their own SQLite files; the PostgreSQL run shows the same sharing
# with real processes on one database (test_scale_out.py).
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
async def two_instances(tmp_path: Path, redis_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two independent app instances sharing one Redis (each with its own database here)."""
    redis.Redis.from_url(redis_url).flushdb()
    async with AsyncExitStack() as stack:
        clients = []
        for name in ("a", "b"):
            app = create_app(
                make_settings(tmp_path / name, redis_url=redis_url), hasher=FAST_HASHER
            )
            await stack.enter_async_context(
                LifespanManager(
                    app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
                )
            )
            transport = httpx.ASGITransport(app=app, client=("198.51.100.77", 1234))
            client = httpx.AsyncClient(transport=transport, base_url=f"http://{name}")
            clients.append(await stack.enter_async_context(client))
        yield clients


async def test_failed_logins_are_counted_across_instances(
    two_instances: list[httpx.AsyncClient],
) -> None:
    first, second = two_instances
    for client in (first, second):
        body = {"email": "ada@example.com", "password": PASSWORD}
        assert (await client.post("/auth/register", json=body)).status_code == 201
    wrong = {"email": "ada@example.com", "password": "not the password at all"}
    for n in range(10):
        client = (first, second)[n % 2]
        assert (await client.post("/auth/login", json=wrong)).status_code == 401
    for client in (first, second):
        right = await client.post(
            "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert right.status_code == 429
        assert int(right.headers["retry-after"]) >= 1


async def test_limits_live_in_redis(two_instances: list[httpx.AsyncClient], redis_url: str) -> None:
    first, _ = two_instances
    await first.post(
        "/auth/login", json={"email": "x@example.com", "password": "wrong password here"}
    )
    keys = redis.Redis.from_url(redis_url).keys("tokenward-limits*")
    assert keys, "no rate-limit counters in Redis"
