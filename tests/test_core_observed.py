"""What the metrics count, as pure rules: a sign-in step from a recorded event, a refresh's
result from the rotation decision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tokenward.core.events import EventType, LoginMethod, LoginResult, NewEvent, login_outcome
from tokenward.core.refresh import RefreshResult, Rotation

pytestmark = pytest.mark.sqlite_only

AT = datetime(2026, 12, 6, tzinfo=UTC)
SUCCEEDED, FAILED, MFA_REQUIRED = LoginResult
PASSWORD, MFA, PASSKEY = LoginMethod


def event(kind: EventType, *, session: str | None = None, **detail: Any) -> NewEvent:
    return NewEvent(kind, AT, session_id=session, detail=detail or None)


@pytest.mark.parametrize(
    ("recorded", "outcome"),
    [
        (event(EventType.LOGIN_SUCCEEDED, session="s", amr=["pwd"]), (SUCCEEDED, PASSWORD)),
        (
            event(EventType.LOGIN_SUCCEEDED, session="s", amr=["pwd", "otp", "mfa"]),
            (SUCCEEDED, MFA),
        ),
        (
            event(EventType.LOGIN_SUCCEEDED, session="s", amr=["pwd", "hwk", "mfa"]),
            (SUCCEEDED, MFA),
        ),
        (event(EventType.LOGIN_SUCCEEDED, session="s", amr=["hwk", "mfa"]), (SUCCEEDED, PASSKEY)),
        (event(EventType.LOGIN_SUCCEEDED, session="s", amr=["swk", "mfa"]), (SUCCEEDED, PASSKEY)),
        (event(EventType.LOGIN_FAILED, reason="bad_credentials"), (FAILED, PASSWORD)),
        (event(EventType.LOGIN_FAILED, reason="changed_during_login"), (FAILED, PASSWORD)),
        (event(EventType.MFA_REQUIRED, enrolling=False), (MFA_REQUIRED, PASSWORD)),
        (event(EventType.MFA_FAILED, method="totp"), (FAILED, MFA)),
        (event(EventType.MFA_REPLAY_REJECTED, method="totp"), (FAILED, MFA)),
        # A reauthentication names its session: not a sign-in.
        (event(EventType.LOGIN_FAILED, session="s", reason="bad_credentials"), None),
        (event(EventType.MFA_FAILED, session="s", method="totp"), None),
        (event(EventType.MFA_VERIFIED, session="s", method="totp"), None),
        (event(EventType.REFRESH, session="s"), None),
        (event(EventType.USER_REGISTERED), None),
    ],
)
def test_a_sign_in_step_from_its_event(
    recorded: NewEvent, outcome: tuple[LoginResult, LoginMethod] | None
) -> None:
    assert login_outcome(recorded) == outcome


def test_every_rotation_decision_has_a_result() -> None:
    assert [RefreshResult.of(decision) for decision in Rotation] == [
        RefreshResult.ROTATED,
        RefreshResult.GRACE,
        RefreshResult.REUSE_DETECTED,
        RefreshResult.INVALID,
    ]


def test_every_outcome_named_is_one_the_rule_gives() -> None:
    """The pairs declared at 0 are exactly the pairs the rule answers, over every event type,
    with and without a session, with every kind of amr."""
    from tokenward.core.events import LOGIN_OUTCOMES

    amrs = [
        None,
        ["pwd"],
        ["pwd", "otp", "mfa"],
        ["pwd", "hwk", "mfa"],
        ["hwk", "mfa"],
        ["swk", "mfa"],
    ]
    reached = {
        login_outcome(NewEvent(kind, AT, session_id=session, detail={"amr": amr} if amr else None))
        for kind in EventType
        for session in (None, "s")
        for amr in amrs
    }
    assert reached - {None} == LOGIN_OUTCOMES
