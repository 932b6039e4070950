"""Several `tokenward serve` processes on one PostgreSQL and one Redis, and the database failing.

PostgreSQL run only (``pytest --database=postgresql``, part of ``make test``): the fixtures put
every process of a test on that test's database and on the session's Redis server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import COOKIE, PASSWORD, SHARED_SECRET, refresh_cookie, serving
from support.pgcluster import PostgresCluster

pytestmark = pytest.mark.postgresql_only


@pytest.fixture(autouse=True)
def _one_public_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Instances behind one load balancer share the public URL (else each issuer would be
    its own --port, and a token from one would not verify on another)."""
    monkeypatch.setenv("TOKENWARD_ISSUER", "http://auth.scale-out.test")


def _sign_up(base: str, email: str) -> httpx.Response:
    payload = {"email": email, "password": PASSWORD}
    assert httpx.post(f"{base}/auth/register", json=payload).status_code == 201
    login = httpx.post(f"{base}/auth/login", json=payload)
    assert login.status_code == 200, login.text
    return login


def _refresh(base: str, token: str) -> httpx.Response:
    return httpx.post(f"{base}/auth/refresh", headers={"Cookie": f"{COOKIE}={token}"})


def _me(base: str, access: str) -> httpx.Response:
    return httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {access}"})


def test_a_token_rotated_on_one_instance_and_replayed_on_another_ends_the_session(
    tmp_path: Path,
) -> None:
    with (
        serving(tmp_path / "a") as (a, _),
        serving(tmp_path / "b") as (b, _),
    ):
        login = _sign_up(a, "ada@example.com")
        first = refresh_cookie(login)
        second = refresh_cookie(_refresh(a, first))
        third_response = _refresh(b, second)  # the instances share rotation state
        assert third_response.status_code == 200
        third = refresh_cookie(third_response)

        replay = _refresh(b, first)  # two generations behind: a stolen token
        assert replay.status_code == 401
        # The whole session ended, on both instances, for every token of it.
        assert _refresh(a, third).status_code == 401
        for base in (a, b):
            assert _me(base, login.json()["access_token"]).status_code == 401


def test_rate_limits_count_across_instances(tmp_path: Path) -> None:
    limits = {"TOKENWARD_RATE_LIMIT_LOGIN_FAILURES_ACCOUNT_IP": "3/minute"}
    with (
        serving(tmp_path / "a", **limits) as (a, _),
        serving(tmp_path / "b", **limits) as (b, _),
    ):
        _sign_up(a, "ada@example.com")
        wrong = {"email": "ada@example.com", "password": "not the password at all"}
        statuses = [httpx.post(f"{base}/auth/login", json=wrong).status_code for base in (a, b, a)]
        assert statuses == [401, 401, 401]
        refused = httpx.post(f"{b}/auth/login", json=wrong)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1


def test_a_key_rotated_by_one_instance_is_served_and_honoured_by_the_other(
    tmp_path: Path,
) -> None:
    fast_keys = {"TOKENWARD_KEY_RELOAD_INTERVAL": "1", "TOKENWARD_JWKS_MAX_AGE": "1"}
    with serving(tmp_path / "b", **fast_keys) as (b, _):
        before = _kids(b)
        _sign_up(b, "ada@example.com")
        # A rotates on a schedule (every 3 s here); B never does on its own.
        with serving(tmp_path / "a", TOKENWARD_KEY_ROTATION="3", **fast_keys) as (a, _):
            deadline = time.monotonic() + 30
            while True:
                login = httpx.post(
                    f"{a}/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
                )
                access = login.json()["access_token"]
                if _kid(access) not in before:
                    break
                assert time.monotonic() < deadline, "A never signed with a rotated key"
                time.sleep(0.3)
            # B rereads the shared keys: it publishes A's new key and accepts its tokens.
            deadline = time.monotonic() + 10
            while _kid(access) not in _kids(b) or _me(b, access).status_code != 200:
                assert time.monotonic() < deadline, "B never took up A's key"
                time.sleep(0.2)


def _kids(base: str) -> set[str]:
    return {key["kid"] for key in httpx.get(f"{base}/.well-known/jwks.json").json()["keys"]}


def _kid(token: str) -> str:
    import jwt

    return str(jwt.get_unverified_header(token)["kid"])


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A durable server of this test's own, so that stopping it disturbs no other test."""
    cluster = PostgresCluster(durable=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


async def test_database_outage_gives_503_then_service_resumes_with_nothing_lost(
    tmp_path: Path, own_postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "TOKENWARD_DATABASE_URL": own_postgres.url(),
        "TOKENWARD_SECRET_KEY": SHARED_SECRET,
        "TOKENWARD_RATE_LIMITS": "false",
    }
    monkeypatch.delenv("TOKENWARD_REDIS_URL")  # the database is the fault under test
    users = [f"user{n}@example.com" for n in range(4)]
    with serving(tmp_path / "data", **env) as (base, _):
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            tokens = {email: refresh_cookie(_sign_up(base, email)) for email in users}
            logins = Counter(dict.fromkeys(users, 1))
            uncertain_logins: Counter[str] = Counter()
            statuses: Counter[int] = Counter()
            stop = asyncio.Event()

            async def traffic(email: str) -> None:
                # Login, refresh and protected calls in a loop, following the cookie chain.
                while not stop.is_set():
                    started = time.monotonic()
                    response = await client.post(
                        "/auth/refresh", headers={"Cookie": f"{COOKIE}={tokens[email]}"}
                    )
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        tokens[email] = refresh_cookie(response)
                        access = response.json()["access_token"]
                        me = await client.get(
                            "/auth/me", headers={"Authorization": f"Bearer {access}"}
                        )
                        statuses[me.status_code] += 1
                    login = await client.post(
                        "/auth/login", json={"email": email, "password": PASSWORD}
                    )
                    statuses[login.status_code] += 1
                    if login.status_code == 200:
                        logins[email] += 1
                    elif login.status_code == 503:
                        uncertain_logins[email] += 1  # it may have committed before the fault
                    # Not hung: each round trip ends quickly, whatever the database does.
                    assert time.monotonic() - started < 15
                    await asyncio.sleep(0.05)

            workers = [asyncio.create_task(traffic(email)) for email in users]
            await asyncio.sleep(1.5)
            assert (await client.get("/readyz")).status_code == 200

            await asyncio.to_thread(own_postgres.stop, "immediate")
            ready = await _wait_for_status(client, 503)
            assert ready.json()["checks"]["database"] == "unavailable"
            await asyncio.sleep(2)  # traffic meets the outage
            outage = await client.post("/auth/login", json={"email": users[0], "password": "x"})
            assert outage.status_code == 503
            assert outage.headers["content-type"] == "application/problem+json"
            assert "Retry-After" in outage.headers
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

            await asyncio.to_thread(own_postgres.start)
            await _wait_for_status(client, 200)
            await asyncio.sleep(2)  # traffic resumes on fresh connections
            stop.set()
            await asyncio.gather(*workers)

            assert set(statuses) <= {200, 503}, statuses
            assert statuses[503] > 0 and statuses[200] > 0
            # Every chain continues, and each user has exactly the sessions their logins made.
            for email in users:
                response = await client.post(
                    "/auth/refresh", headers={"Cookie": f"{COOKIE}={tokens[email]}"}
                )
                assert response.status_code == 200, response.text
                access = response.json()["access_token"]
                sessions = (
                    await client.get(
                        "/auth/sessions", headers={"Authorization": f"Bearer {access}"}
                    )
                ).json()["sessions"]
                assert logins[email] <= len(sessions) <= logins[email] + uncertain_logins[email]


async def _wait_for_status(client: httpx.AsyncClient, status: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        response = await client.get("/readyz")
        if response.status_code == status:
            return response
        assert time.monotonic() < deadline, f"/readyz never answered {status}"
        await asyncio.sleep(0.2)
