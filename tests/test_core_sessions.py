"""The session rules as tables: no database, no clock read, microseconds each."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tokenward.core.events import ClientInfo, EventType
from tokenward.core.refresh import Rotation
from tokenward.core.sessions import EndReason, Session, SessionLifetimes
from tokenward.exceptions import SessionEndedError, TokenError

pytestmark = pytest.mark.sqlite_only  # no database: once is enough

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LIFETIMES = SessionLifetimes(idle=timedelta(days=7), absolute=timedelta(days=30))
FIRST = ClientInfo("192.0.2.1", "first")
THIEF = ClientInfo("198.51.100.9", "thief")
REUSE = timedelta(seconds=10)


def started(now: datetime = T0) -> Session:
    return Session.start(id="s1", user_id="u1", now=now, lifetimes=LIFETIMES, client=FIRST)


def rotated(times: int, *, at: datetime = T0) -> Session:
    session = started()
    for _ in range(times):
        session = session.rotate(
            session.generation, at, client=FIRST, reuse_interval=REUSE, idle=LIFETIMES.idle
        ).session
    return session


def test_a_new_session_starts_at_generation_zero_with_both_limits() -> None:
    session = started()
    assert session.generation == 0
    assert session.expires_at == T0 + LIFETIMES.idle
    assert session.max_expires_at == T0 + LIFETIMES.absolute
    assert (session.last_ip, session.last_user_agent) == ("192.0.2.1", "first")
    short = SessionLifetimes(idle=timedelta(days=7), absolute=timedelta(hours=1))
    capped = Session.start(id="s", user_id="u", now=T0, lifetimes=short, client=FIRST)
    assert capped.expires_at == capped.max_expires_at == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("change", "now", "disabled", "reason"),
    [
        ({}, T0, False, None),
        ({}, T0 + LIFETIMES.idle - timedelta(microseconds=1), False, None),
        ({}, T0 + LIFETIMES.idle, False, "session expired"),
        ({"expires_at": T0 + LIFETIMES.absolute * 2}, T0 + LIFETIMES.absolute, False, "expired"),
        ({"revoked_at": T0}, T0, False, "session revoked"),
        ({}, T0, True, "user disabled"),
        ({"revoked_at": T0}, T0, True, "session revoked"),
    ],
)
def test_liveness(change: dict[str, datetime], now: datetime, disabled: bool, reason: str) -> None:
    session = replace(started(), **change)
    if reason is None:
        session.check_alive(now, user_disabled=disabled)
    else:
        with pytest.raises(SessionEndedError, match=reason):
            session.check_alive(now, user_disabled=disabled)


@pytest.mark.parametrize(
    ("presented", "elapsed", "interval", "decision"),
    [
        (3, 0, REUSE, Rotation.ROTATE),  # the current token
        (2, 0, REUSE, Rotation.REPLAY_SUCCESSOR),  # rotated out just now, racing tabs
        (2, 10, REUSE, Rotation.REPLAY_SUCCESSOR),  # the bound is inclusive
        (2, 11, REUSE, Rotation.REUSE),  # too late: theft
        (1, 0, REUSE, Rotation.REUSE),  # two behind: theft, whenever
        (2, 0, timedelta(0), Rotation.REUSE),  # strict: no grace even at the same instant
    ],
)
def test_rotation(presented: int, elapsed: int, interval: timedelta, decision: Rotation) -> None:
    session = rotated(3)
    now = T0 + timedelta(seconds=elapsed)
    outcome = session.rotate(
        presented, now, client=THIEF, reuse_interval=interval, idle=LIFETIMES.idle
    )
    assert outcome.decision is decision
    if decision is Rotation.ROTATE:
        assert outcome.session.generation == 4
        assert outcome.session.rotated_at == now
        assert outcome.session.expires_at == now + LIFETIMES.idle
        assert outcome.session.last_ip == THIEF.ip
        assert outcome.event is not None and outcome.event.kind is EventType.REFRESH
    elif decision is Rotation.REPLAY_SUCCESSOR:
        assert outcome.session is session
        assert outcome.event is None
    else:
        assert outcome.reused
        assert outcome.session.revoked_at == now
        assert outcome.session.revoked_reason == EndReason.REUSE_DETECTED
        assert outcome.event is not None
        assert outcome.event.kind is EventType.REFRESH_REUSE_DETECTED
        detail = outcome.event.detail or {}
        assert detail["generations_behind"] == 3 - presented
        assert detail["first_use"] == {"ip": "192.0.2.1", "user_agent": "first"}
        assert detail["reuse"] == {"ip": THIEF.ip, "user_agent": THIEF.user_agent}


def test_a_rotation_never_moves_the_end_past_the_absolute_limit() -> None:
    late = T0 + LIFETIMES.absolute - timedelta(days=1)
    session = replace(started(), expires_at=late + timedelta(hours=1))
    outcome = session.rotate(0, late, client=FIRST, reuse_interval=REUSE, idle=LIFETIMES.idle)
    assert outcome.session.expires_at == session.max_expires_at


def test_a_generation_the_session_never_reached_is_refused() -> None:
    with pytest.raises(TokenError, match="ahead"):
        started().rotate(1, T0, client=FIRST, reuse_interval=REUSE, idle=LIFETIMES.idle)


def test_an_ended_session_does_not_rotate() -> None:
    ended = started().end(EndReason.LOGOUT, T0)
    with pytest.raises(SessionEndedError):
        ended.rotate(0, T0, client=FIRST, reuse_interval=REUSE, idle=LIFETIMES.idle)
    with pytest.raises(SessionEndedError, match="disabled"):
        started().rotate(
            0, T0, client=FIRST, reuse_interval=REUSE, idle=LIFETIMES.idle, user_disabled=True
        )


def test_ending_keeps_the_first_end() -> None:
    ended = started().end(EndReason.LOGOUT, T0)
    assert (ended.revoked_at, ended.revoked_reason) == (T0, "logout")
    again = ended.end(EndReason.REVOKED, T0 + timedelta(hours=1))
    assert again is ended
