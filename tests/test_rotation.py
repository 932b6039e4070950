"""Refresh-token rotation: reuse interval, reuse detection, and transactional rotation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from support import FAST_HASHER, Api, FakeClock, refresh_cookie

import tokenward.storage.pg_fast
import tokenward.storage.queries
from tokenward.core.events import EventType, NewEvent
from tokenward.core.refresh import Rotation, decide_rotation
from tokenward.storage import EventRow, SessionRow
from tokenward.storage.sqlite_fast import FastTransaction
from tokenward.web.app import create_app


async def sessions(service: Any) -> list[SessionRow]:
    async with service.db.read() as db:
        return list((await db.execute(select(SessionRow))).scalars())


async def events(service: Any, kind: EventType) -> list[EventRow]:
    async with service.db.read() as db:
        query = select(EventRow).where(EventRow.type == kind.value)
        return list((await db.execute(query)).scalars())


async def test_second_use_within_the_interval_returns_the_same_successor(
    api: Api, clock: FakeClock, service: Any
) -> None:
    """Two tabs refreshing at once both stay signed in, and the chain does not fork."""
    _, token = await api.signed_up()
    first = await api.refresh(token)
    clock.advance(5)
    second = await api.refresh(token)
    assert first.status_code == second.status_code == 200
    assert refresh_cookie(first) == refresh_cookie(second)
    assert (await api.me(second.json()["access_token"])).status_code == 200
    [session] = await sessions(service)
    assert session.generation == 1
    assert session.revoked_at is None
    assert (await api.refresh(refresh_cookie(second))).status_code == 200


async def test_reuse_after_the_interval_ends_the_whole_session(
    api: Api, clock: FakeClock, service: Any
) -> None:
    """A rotated-out token presented after the interval is theft: the newest token dies too."""
    _, stolen = await api.signed_up()
    rotated = await api.refresh(stolen, headers={"User-Agent": "victim-browser"})
    newest_access = rotated.json()["access_token"]
    newest_refresh = refresh_cookie(rotated)
    clock.advance(11)
    replay = await api.refresh(stolen, headers={"User-Agent": "attacker-script"})
    assert replay.status_code == 401
    assert (await api.refresh(newest_refresh)).status_code == 401
    assert (await api.me(newest_access)).status_code == 401
    [session] = await sessions(service)
    assert session.revoked_reason == "reuse_detected"
    [event] = await events(service, EventType.REFRESH_REUSE_DETECTED)
    assert event.session_id == session.id
    assert event.user_agent == "attacker-script"
    assert event.detail is not None
    assert event.detail["rotated_seconds_ago"] == pytest.approx(11)
    assert event.detail["generations_behind"] == 1
    assert event.detail["first_use"]["user_agent"] == "victim-browser"
    assert event.detail["reuse"]["user_agent"] == "attacker-script"
    assert event.detail["reuse"]["ip"] == "203.0.113.7"
    assert stolen not in str(event.detail)


async def test_reuse_of_an_older_generation_is_theft_even_within_the_interval(
    api: Api, service: Any
) -> None:
    """Only the token rotated out last gets the grace; anything older ends the session."""
    _, t0 = await api.signed_up()
    t1 = refresh_cookie(await api.refresh(t0))
    t2 = refresh_cookie(await api.refresh(t1))
    assert (await api.refresh(t0)).status_code == 401
    assert (await api.refresh(t2)).status_code == 401
    [session] = await sessions(service)
    assert session.revoked_reason == "reuse_detected"


async def test_reuse_leaves_other_sessions_alone(api: Api, clock: FakeClock) -> None:
    """Theft in one session ends that session only."""
    _, stolen = await api.signed_up()
    other = refresh_cookie(await api.login("ada@example.com"))
    await api.refresh(stolen)
    clock.advance(60)
    assert (await api.refresh(stolen)).status_code == 401
    assert (await api.refresh(other)).status_code == 200


async def test_concurrent_refreshes_rotate_once(api: Api, service: Any) -> None:
    """Ten simultaneous refreshes of one token: one rotation, one successor for all."""
    _, token = await api.signed_up()
    responses = await asyncio.gather(*(api.refresh(token) for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert len({refresh_cookie(r) for r in responses}) == 1
    [session] = await sessions(service)
    assert session.generation == 1
    assert len(await events(service, EventType.REFRESH)) == 1


async def test_a_failed_rotation_leaves_the_session_as_it_was(
    api: Api, app: Any, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rotation transaction fails, nothing of it is kept and the old token still works."""
    _, token = await api.signed_up()
    real_event = tokenward.storage.queries.event_row

    def failing_event(event: NewEvent) -> Any:
        if event.kind is EventType.REFRESH:
            raise RuntimeError("disk full")
        return real_event(event)

    monkeypatch.setattr(tokenward.storage.queries, "event_row", failing_event)
    # The same failure on the plain-sqlite3 path that SQLite refreshes take first.
    real_add = FastTransaction.add_event

    def failing_add(self: FastTransaction, event: NewEvent) -> None:
        if event.kind is EventType.REFRESH:
            raise RuntimeError("disk full")
        real_add(self, event)

    monkeypatch.setattr(FastTransaction, "add_event", failing_add)
    # And on the asyncpg path that PostgreSQL refreshes take first.
    real_values = tokenward.storage.pg_fast.event_values

    def failing_values(event: NewEvent) -> tuple[object, ...]:
        if event.kind is EventType.REFRESH:
            raise RuntimeError("disk full")
        return real_values(event)

    monkeypatch.setattr(tokenward.storage.pg_fast, "event_values", failing_values)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/auth/refresh", headers={"Cookie": f"tw_refresh={token}"})
    assert response.status_code == 500
    assert "disk full" not in response.text
    [session] = await sessions(service)
    assert session.generation == 0
    assert session.rotated_at is None
    monkeypatch.undo()
    assert (await api.refresh(token)).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"refresh_ttl": "1h", "session_max_age": "2h"}])
async def test_idle_sessions_expire_and_rotation_extends_them(api: Api, clock: FakeClock) -> None:
    """Each rotation pushes the idle timeout out; an idle session ends; so does the max age."""
    _, token = await api.signed_up()
    statuses = []
    for _ in range(3):
        clock.advance(50 * 60)
        response = await api.refresh(token)
        statuses.append(response.status_code)
        if response.status_code == 200:
            token = refresh_cookie(response)
    # 50 and 100 minutes in: alive; 150 minutes in: past the 2 h absolute lifetime.
    assert statuses == [200, 200, 401]
    _, idle = await api.signed_up("grace@example.com")
    clock.advance(61 * 60)
    assert (await api.refresh(idle)).status_code == 401


@pytest.mark.parametrize("settings_overrides", [{"refresh_ttl": "1h"}])
async def test_cookie_max_age_follows_the_session_expiry(api: Api) -> None:
    """The refresh cookie lives exactly as long as the session's idle window."""
    await api.register("ada@example.com")
    response = await api.login("ada@example.com")
    assert "Max-Age=3600" in response.headers["set-cookie"]


async def test_the_fast_and_the_ordinary_rotation_write_the_same_rows(
    api: Api, service: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, fast_token = await api.signed_up("fast@example.com")
    _, slow_token = await api.signed_up("slow@example.com")
    clock.advance(5)
    assert (await api.refresh(fast_token)).status_code == 200
    monkeypatch.setattr(type(service.db), "rotations", lambda self: None)
    assert (await api.refresh(slow_token)).status_code == 200
    monkeypatch.undo()

    rows = {row.user_id: row for row in await sessions(service)}
    async with service.db.read() as db:
        events = (
            (await db.execute(select(EventRow).where(EventRow.type == "session.refreshed")))
            .scalars()
            .all()
        )
    fast, slow = sorted(rows.values(), key=lambda row: row.created_at)
    columns = ("generation", "rotated_at", "last_used_at", "expires_at", "last_ip")
    assert [getattr(fast, c) for c in columns] == [getattr(slow, c) for c in columns]
    assert fast.rotated_at == clock.now
    by_session = {event.session_id: event for event in events}
    fields = ("at", "type", "ip", "user_agent", "detail")
    assert [getattr(by_session[fast.id], f) for f in fields] == [
        getattr(by_session[slow.id], f) for f in fields
    ]


@pytest.mark.sqlite_only
async def test_a_refresh_waits_its_turn_when_another_writer_holds_the_lock(
    api: Api, service: Any
) -> None:
    """The fast path never waits (it would stall every request); the ordinary path does."""
    import sqlite3

    _, token = await api.signed_up()
    holder = sqlite3.connect(str(service.settings.data_dir / "tokenward.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def release_soon() -> None:
        await asyncio.sleep(0.3)
        holder.execute("COMMIT")

    releasing = asyncio.create_task(release_soon())
    response = await api.refresh(token)
    await releasing
    holder.close()
    assert response.status_code == 200
    [row] = await sessions(service)
    assert row.generation == 1


@pytest.mark.parametrize("settings_overrides", [{"refresh_reuse_interval": "0"}])
async def test_with_a_zero_interval_any_replay_ends_the_session(
    api: Api, clock: FakeClock, service: Any
) -> None:
    """TOKENWARD_REFRESH_REUSE_INTERVAL=0: the token rotated out is theft at once, even at the
    very instant of its rotation; no grace, no shared successor."""
    assert service.settings.refresh_reuse_interval.total_seconds() == 0
    _, token = await api.signed_up()
    rotated = await api.refresh(token)
    assert rotated.status_code == 200
    successor_access, successor = rotated.json()["access_token"], refresh_cookie(rotated)
    replay = await api.refresh(token)  # the clock has not moved
    assert replay.status_code == 401
    assert (await api.refresh(successor)).status_code == 401
    assert (await api.me(successor_access)).status_code == 401
    [session] = await sessions(service)
    assert session.revoked_reason == "reuse_detected"
    assert len(await events(service, EventType.REFRESH_REUSE_DETECTED)) == 1


def test_the_rotation_rule_with_a_zero_interval_has_no_grace() -> None:
    """decide_rotation (both the ORM and the plain-sqlite3 path use it): with 0, the
    predecessor is reuse even at the same instant or with a clock slightly behind."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    zero, ten = timedelta(0), timedelta(seconds=10)

    def decide(rotated_at: datetime, interval: timedelta) -> Rotation:
        return decide_rotation(
            presented=4, current=5, rotated_at=rotated_at, now=now, reuse_interval=interval
        )

    assert decide(now, zero) is Rotation.REUSE
    assert decide(now + timedelta(seconds=1), zero) is Rotation.REUSE
    assert decide(now - ten, ten) is Rotation.REPLAY_SUCCESSOR  # the interval is inclusive
    assert decide(now - ten - timedelta(microseconds=1), ten) is Rotation.REUSE


@asynccontextmanager
async def another_instance(settings: Any, clock: FakeClock) -> AsyncIterator[Api]:
    """A second tokenward on the same database, as another process or machine would be."""
    application = create_app(settings, clock=clock, hasher=FAST_HASHER)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.8", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(http)


async def test_a_session_ended_elsewhere_does_not_rotate_here(
    api: Api, settings: Any, clock: FakeClock
) -> None:
    """This instance remembers the session as it last rotated it (PostgreSQL skips the read);
    a logout through another instance must still end it here."""
    _, token = await api.signed_up()
    rotated = await api.refresh(token)
    assert rotated.status_code == 200
    successor = refresh_cookie(rotated)
    async with another_instance(settings, clock) as elsewhere:
        assert (await elsewhere.logout(successor)).status_code == 204
    assert (await api.refresh(successor)).status_code == 401


async def test_a_session_rotated_elsewhere_goes_on_rotating_here(
    api: Api, settings: Any, clock: FakeClock, service: Any
) -> None:
    """Rotations alternating between two instances form one chain; the token rotated out
    elsewhere, presented here after the reuse interval, is caught as reuse."""
    _, token = await api.signed_up()
    first = await api.refresh(token)
    assert first.status_code == 200
    async with another_instance(settings, clock) as elsewhere:
        second = await elsewhere.refresh(refresh_cookie(first))
        assert second.status_code == 200
    third = await api.refresh(refresh_cookie(second))
    assert third.status_code == 200
    [session] = await sessions(service)
    assert session.generation == 3
    clock.advance(service.settings.refresh_reuse_interval.total_seconds() + 1)
    assert (await api.refresh(refresh_cookie(first))).status_code == 401
    [session] = await sessions(service)
    assert session.revoked_reason == "reuse_detected"
