"""Many clients at once against a real `tokenward serve --workers 2`, on each database.

The SQLite run has two processes writing one file; the PostgreSQL run (``--database=postgresql``)
has two processes on one server. Either way: one rotation per token, one user per email, and no
"database is locked", serialization failure or 500 ever reaches a client.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from support import COOKIE, PASSWORD, refresh_cookie, serving

PARALLEL = 50
# Limits out of the way: this is about the database, not about throttling one client.
GENEROUS_LIMITS = {
    "TOKENWARD_RATE_LIMIT_REFRESH_SESSION": "1000/minute",
    "TOKENWARD_RATE_LIMIT_REFRESH_IP": "10000/minute",
    "TOKENWARD_RATE_LIMIT_REGISTER_IP": "1000/hour",
}


async def _signed_in(client: httpx.AsyncClient, email: str) -> str:
    payload = {"email": email, "password": PASSWORD}
    assert (await client.post("/auth/register", json=payload)).status_code == 201
    login = await client.post("/auth/login", json=payload)
    assert login.status_code == 200, login.text
    return refresh_cookie(login)


def _client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        timeout=60,
        limits=httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL),
    )


async def test_fifty_parallel_refreshes_of_one_token_rotate_it_once(tmp_path: Path) -> None:
    with serving(tmp_path / "data", args=["--workers", "2"], **GENEROUS_LIMITS) as (base, _):
        async with _client(base) as client:
            token = await _signed_in(client, "race@example.com")
            responses = await asyncio.gather(
                *(
                    client.post("/auth/refresh", headers={"Cookie": f"{COOKIE}={token}"})
                    for _ in range(PARALLEL)
                )
            )
            assert sorted({r.status_code for r in responses}) == [200], [
                r.text for r in responses if r.status_code != 200
            ]
            # One rotation: every caller got the same successor (the reuse-interval answer).
            successors = {refresh_cookie(r) for r in responses}
            assert len(successors) == 1
            successor = successors.pop()
            assert successor != token

            # The session lives on at its next generation, with no reuse detected.
            onward = await client.post("/auth/refresh", headers={"Cookie": f"{COOKIE}={successor}"})
            assert onward.status_code == 200
            access = onward.json()["access_token"]
            auth = {"Authorization": f"Bearer {access}"}
            sessions = (await client.get("/auth/sessions", headers=auth)).json()["sessions"]
            assert len(sessions) == 1
            events = (await client.get("/auth/events", headers=auth)).json()["events"]
            types = [event["type"] for event in events]
            assert "session.reuse_detected" not in types
            assert types.count("session.refreshed") == 2


async def test_fifty_parallel_registrations_of_one_email_make_one_user(tmp_path: Path) -> None:
    with serving(tmp_path / "data", args=["--workers", "2"], **GENEROUS_LIMITS) as (base, _):
        async with _client(base) as client:
            payload = {"email": "twin@example.com", "password": PASSWORD}
            responses = await asyncio.gather(
                *(client.post("/auth/register", json=payload) for _ in range(PARALLEL))
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [201] + [409] * (PARALLEL - 1), [
                r.text for r in responses if r.status_code not in {201, 409}
            ]
            taken = next(r for r in responses if r.status_code == 409)
            assert taken.json()["type"] == "urn:tokenward:problem:email-taken"
            # The one account works.
            login = await client.post("/auth/login", json=payload)
            assert login.status_code == 200


async def test_parallel_logins_and_refreshes_of_many_users_all_succeed(tmp_path: Path) -> None:
    """Mixed writers on many rows at once: every request answered 2xx, every chain intact."""
    users = 10
    with serving(tmp_path / "data", args=["--workers", "2"], **GENEROUS_LIMITS) as (base, _):
        async with _client(base) as client:
            tokens = await asyncio.gather(
                *(_signed_in(client, f"user{n}@example.com") for n in range(users))
            )

            async def chain(token: str, steps: int) -> str:
                for _ in range(steps):
                    response = await client.post(
                        "/auth/refresh", headers={"Cookie": f"{COOKIE}={token}"}
                    )
                    assert response.status_code == 200, response.text
                    token = refresh_cookie(response)
                return token

            finals = await asyncio.gather(*(chain(token, 5) for token in tokens))
            assert len(set(finals)) == users


async def test_a_password_change_racing_refreshes_of_the_same_user(tmp_path: Path) -> None:
    """Row locks taken in different orders (user then sessions, session then user) never
    surface as a deadlock error: every refresh either rotates or finds its session ended."""
    with serving(tmp_path / "data", args=["--workers", "2"], **GENEROUS_LIMITS) as (base, _):
        async with _client(base) as client:
            payload = {"email": "busy@example.com", "password": PASSWORD}
            assert (await client.post("/auth/register", json=payload)).status_code == 201
            logins = await asyncio.gather(
                *(client.post("/auth/login", json=payload) for _ in range(10))
            )
            keeper, *others = [refresh_cookie(login) for login in logins]
            access = logins[0].json()["access_token"]
            change = client.post(
                "/auth/password",
                json={"current_password": PASSWORD, "new_password": PASSWORD + " and more"},
                headers={"Authorization": f"Bearer {access}"},
            )
            refreshes = [
                client.post("/auth/refresh", headers={"Cookie": f"{COOKIE}={token}"})
                for token in others
            ]
            changed, *refreshed = await asyncio.gather(change, *refreshes)
            assert changed.status_code == 204, changed.text
            assert {r.status_code for r in refreshed} <= {200, 401}, [r.text for r in refreshed]
            # Afterwards only the session that changed the password is left.
            for response in refreshed:
                if response.status_code == 200:
                    again = await client.post(
                        "/auth/refresh",
                        headers={"Cookie": f"{COOKIE}={refresh_cookie(response)}"},
                    )
                    assert again.status_code == 401
            kept = await client.post("/auth/refresh", headers={"Cookie": f"{COOKIE}={keeper}"})
            assert kept.status_code == 200
