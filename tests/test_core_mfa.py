"""core.mfa: how a session authenticated, and the pending sign-in, as tables of values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tokenward.core.mfa import (
    AAL2_REAUTH_WINDOW,
    CHALLENGE_ATTEMPTS,
    Acr,
    Amr,
    Authentication,
    Factor,
    FactorType,
    MfaChallenge,
    hash_challenge_token,
    parse_challenge_token,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=20)


@pytest.mark.parametrize(
    ("authentication", "amr", "acr"),
    [
        (Authentication.password(NOW), ["pwd"], "aal1"),
        (Authentication.with_second_factor(NOW), ["pwd", "otp", "mfa"], "aal2"),
    ],
)
def test_claims_say_the_methods_the_level_and_the_time(
    authentication: Authentication, amr: list[str], acr: str
) -> None:
    assert authentication.claims() == {
        "amr": amr,
        "acr": acr,
        "auth_time": int(NOW.timestamp()),
    }


@pytest.mark.parametrize(
    ("before", "at", "second_factor", "acr"),
    [
        (Authentication.password(NOW), LATER, False, Acr.AAL1),
        (Authentication.password(NOW), LATER, True, Acr.AAL2),
        (Authentication.with_second_factor(NOW), LATER, False, Acr.AAL2),
        (Authentication.with_second_factor(NOW), NOW + AAL2_REAUTH_WINDOW, False, Acr.AAL2),
        # Past the window a password alone is a password sign-in again.
        (Authentication.with_second_factor(NOW), NOW + AAL2_REAUTH_WINDOW * 2, False, Acr.AAL1),
        (Authentication.with_second_factor(NOW), LATER, True, Acr.AAL2),
    ],
)
def test_a_reauthentication_renews_the_time_and_raises_only_with_a_factor(
    before: Authentication, at: datetime, second_factor: bool, acr: Acr
) -> None:
    after = before.renewed(at, second_factor=second_factor)
    assert after.time == at
    assert after.acr is acr
    if acr is Acr.AAL1:
        assert after.methods == (Amr.PWD,)


def test_a_password_does_not_move_the_second_factor_time() -> None:
    """Reauthenticating with a password every hour cannot keep aal2 alive for ever."""
    authentication = Authentication.with_second_factor(NOW)
    at = NOW
    while authentication.acr is Acr.AAL2:
        at += timedelta(hours=1)
        authentication = authentication.renewed(at, second_factor=False)
    assert at - NOW == AAL2_REAUTH_WINDOW + timedelta(hours=1)


def test_an_unknown_stored_method_is_left_out() -> None:
    """A value a newer version stored never becomes a level this one cannot vouch for."""
    loaded = Authentication.load("pwd face mfa", NOW, created_at=NOW)
    assert loaded.methods == (Amr.PWD, Amr.MFA)
    assert Authentication.load("face", NOW, created_at=NOW).methods == (Amr.PWD,)
    # What this version knows it keeps: a passkey's.
    assert Authentication.load("hwk mfa", NOW, created_at=NOW).methods == (Amr.HWK, Amr.MFA)


@pytest.mark.parametrize(
    ("amr", "time", "methods", "at"),
    [
        (None, None, (Amr.PWD,), NOW),  # a row older than the columns: a password at creation
        ("pwd", LATER, (Amr.PWD,), LATER),
        ("pwd otp mfa", LATER, (Amr.PWD, Amr.OTP, Amr.MFA), LATER),
    ],
)
def test_stored_form_round_trips(
    amr: str | None, time: datetime | None, methods: tuple[Amr, ...], at: datetime
) -> None:
    loaded = Authentication.load(amr, time, created_at=NOW)
    assert (loaded.methods, loaded.time) == (methods, at)
    assert Authentication.load(loaded.stored(), loaded.time, created_at=NOW) == loaded


@pytest.mark.parametrize(
    ("age", "recent"), [(timedelta(0), True), (timedelta(minutes=10), True), (LATER - NOW, False)]
)
def test_recent_is_within_max_age(age: timedelta, recent: bool) -> None:
    assert Authentication.password(NOW).recent(NOW + age, timedelta(minutes=10)) is recent


def test_a_challenge_token_is_random_and_only_its_hash_is_kept() -> None:
    issued = MfaChallenge.issue("u1", NOW)
    assert parse_challenge_token(issued.token) == issued.token
    assert issued.record.token_hash == hash_challenge_token(issued.token)
    assert issued.token not in repr(issued.record)
    assert MfaChallenge.issue("u1", NOW).token != issued.token
    assert issued.record.expires_in == 300


@pytest.mark.parametrize(
    "text",
    [
        None,
        42,
        "",
        "twm_",
        "twv_" + "A" * 43,
        "twm_" + "A" * 42,
        "twm_" + "A" * 44,
        "twm_" + "é" * 43,
    ],
)
def test_anything_else_is_no_challenge_token(text: object) -> None:
    assert parse_challenge_token(text) is None


@pytest.mark.parametrize(
    ("attempts", "used", "at", "usable"),
    [
        (0, False, NOW, True),
        (CHALLENGE_ATTEMPTS - 1, False, NOW, True),
        (CHALLENGE_ATTEMPTS, False, NOW, False),
        (0, True, NOW, False),
        (0, False, NOW + timedelta(minutes=5), False),
    ],
)
def test_a_challenge_is_usable_until_used_expired_or_exhausted(
    attempts: int, used: bool, at: datetime, usable: bool
) -> None:
    record = replace(
        MfaChallenge.issue("u1", NOW).record,
        attempts=attempts,
        used_at=NOW if used else None,
    )
    assert record.usable(at) is usable


@pytest.mark.parametrize(
    ("last", "step", "accepted"),
    [(None, 100, True), (99, 100, True), (100, 100, False), (101, 100, False)],
)
def test_a_factor_accepts_a_step_once_and_never_an_older_one(
    last: int | None, step: int, accepted: bool
) -> None:
    factor = Factor("f", "u", FactorType.TOTP, "sealed", NOW, NOW, last_used_step=last)
    assert factor.accepts_step(step) is accepted


@pytest.mark.parametrize(
    ("confirmed", "at", "confirmable"),
    [(False, NOW + timedelta(minutes=9), True), (False, LATER, False), (True, NOW, False)],
)
def test_an_enrolment_waits_ten_minutes_for_its_code(
    confirmed: bool, at: datetime, confirmable: bool
) -> None:
    factor = Factor("f", "u", FactorType.TOTP, "sealed", NOW, NOW if confirmed else None)
    assert factor.confirmable(at) is confirmable
