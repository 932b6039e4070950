"""What most tests share: the test password and hasher, a controllable clock, settings, and a
thin HTTP client for the contract. Fixtures that use these live in conftest.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pwdlib.hashers.argon2 import Argon2Hasher

from tokenward.core.passwords import PasswordHasher
from tokenward.infra.config import Settings

PASSWORD = "a long enough passphrase 7"
# Cheap argon2 parameters keep hundreds of in-process logins fast. Tests of timing and the
# real-process tests use the production parameters.
FAST_HASHER = PasswordHasher(Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1))
COOKIE = "tw_refresh"
# asgi-lifespan gives up after 5 s by default and leaves the app's lifespan task behind; a
# loaded CI machine can be that slow to migrate a fresh database.
LIFESPAN_TIMEOUT = 120


SHARED_SECRET = "test secret shared by every instance, 32+ bytes long"


@dataclass
class FakeClock:
    """Time passed in, never slept: tests move it forward explicitly.

    A ``tokenward.verify.Clock`` (``time()``, ``monotonic()``), the one clock type the server
    takes, holding its time as an aware datetime because the server's tests compare with
    stored datetimes (``tokenward.testing.FakeClock`` holds epoch seconds, for resource
    servers' tests)."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def time(self) -> float:
        return self.now.timestamp()

    def monotonic(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[call-arg]


class Api:
    """A thin client for the HTTP contract. Cookies are sent explicitly, never by a jar."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.http = client

    async def register(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return await self.http.post("/auth/register", json={"email": email, "password": password})

    async def login(self, email: str, password: str = PASSWORD, **kw: Any) -> httpx.Response:
        return await self.http.post(
            "/auth/login", json={"email": email, "password": password}, **kw
        )

    async def refresh(self, refresh_token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Cookie": f"{COOKIE}={refresh_token}"} if refresh_token else {}
        headers.update(kw.pop("headers", {}))
        return await self.http.post("/auth/refresh", headers=headers, **kw)

    async def logout(self, refresh_token: str | None) -> httpx.Response:
        headers = {"Cookie": f"{COOKIE}={refresh_token}"} if refresh_token else {}
        return await self.http.post("/auth/logout", headers=headers)

    async def me(self, access_token: str) -> httpx.Response:
        return await self.http.get("/auth/me", headers={"Authorization": f"Bearer {access_token}"})

    async def signed_up(self, email: str = "ada@example.com") -> tuple[str, str]:
        """Register and log in; return (access token, refresh token)."""
        assert (await self.register(email)).status_code == 201
        response = await self.login(email)
        assert response.status_code == 200, response.text
        return response.json()["access_token"], refresh_cookie(response)


def refresh_cookie(response: httpx.Response) -> str:
    """The refresh token set by a response's Set-Cookie header."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            value = rest.split(";", 1)[0]
            assert value, "the cookie was cleared, not set"
            return value
    raise AssertionError(f"no {COOKIE} cookie in {response.headers.get_list('set-cookie')}")
