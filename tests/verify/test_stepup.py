"""Step-up authentication (issue 17, RFC 9470), pure: amr/acr/auth_time parsing, the ACR
order, max_age on a hand-moved clock, and the exact challenge."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenward.testing import FakeClock, TokenFactory
from tokenward.verify import (
    ACR_LEVELS,
    Claims,
    StepUp,
    VerificationError,
    Verifier,
    acr_satisfies,
    challenge,
    check_claims,
)

from .corpus import ISSUER, LEEWAY, NOW

REALM = "api"


def parse(**changes: Any) -> Claims:
    """The claims of a payload (already authenticated) with ``changes``, at NOW."""
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "iat": NOW,
        "exp": NOW + 300,
        "jti": "jti-1",
        "sid": "session-1",
        **changes,
    }
    return check_claims(payload, issuer=ISSUER, audience=None, leeway=LEEWAY, now=NOW)


def claims(acr: str | None = None, auth_time: int | None = None) -> Claims:
    return Claims("user-1", "s", "j", ISSUER, NOW, NOW + 300, acr=acr, auth_time=auth_time)


class NoClock:
    """A clock that must not be read."""

    def time(self) -> float:
        raise AssertionError("the clock was read")

    def monotonic(self) -> float:
        raise AssertionError("the clock was read")


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ((), None, None)),
        ({"amr": None, "acr": None, "auth_time": None}, ((), None, None)),  # null is absent
        ({"amr": ["pwd", "otp"]}, (("pwd", "otp"), None, None)),
        ({"amr": []}, ((), None, None)),
        ({"acr": "aal2"}, ((), "aal2", None)),
        ({"acr": "urn:example:gold"}, ((), "urn:example:gold", None)),
        ({"auth_time": NOW - 600}, ((), None, NOW - 600)),
        ({"auth_time": NOW + LEEWAY}, ((), None, NOW + LEEWAY)),  # skew: at the leeway's edge
        ({"auth_time": 0}, ((), None, 0)),
        (
            {"amr": ["pwd", "mfa"], "acr": "aal2", "auth_time": NOW - 5},
            (("pwd", "mfa"), "aal2", NOW - 5),
        ),
    ],
)
def test_amr_acr_and_auth_time_are_read_typed(
    changes: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    """amr becomes a tuple, acr a string, auth_time an int; absent (or null), the defaults."""
    parsed = parse(**changes)
    assert (parsed.amr, parsed.acr, parsed.auth_time) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("amr", "pwd"),  # a string, not a list of them
        ("amr", ["pwd", 1]),
        ("amr", [None]),
        ("amr", {"pwd": True}),
        ("amr", 0),
        ("amr", False),
        ("acr", 2),
        ("acr", ["aal2"]),
        ("acr", True),
        ("acr", ""),
        ("acr", {"level": "aal2"}),
        ("auth_time", "1800000000"),
        ("auth_time", 1_799_999_000.0),  # a float, even a whole one
        ("auth_time", 1.5),
        ("auth_time", True),  # a bool is not a NumericDate
        ("auth_time", [NOW]),
        ("auth_time", NOW + LEEWAY + 1),  # authenticated in the future, beyond the leeway
    ],
)
def test_malformed_authentication_claims_are_refused_as_invalid_claim(
    name: str, value: object
) -> None:
    """A mistyped amr, acr or auth_time refuses the token (invalid_claim, naming the claim),
    as a mistyped scope or roles does: never a guess at what the issuer meant."""
    with pytest.raises(VerificationError) as refused:
        parse(**{name: value})
    assert (refused.value.reason, refused.value.detail) == ("invalid_claim", name)
    assert repr(value) not in str(refused.value)  # the message never holds a value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["amr", "acr", "auth_time"]), json_values))
def test_any_authentication_claims_are_accepted_typed_or_refused_cleanly(
    changes: dict[str, object],
) -> None:
    """Whatever JSON the three claims hold: typed Claims or VerificationError, nothing else."""
    try:
        parsed = parse(**changes)
    except VerificationError as refused:
        assert (refused.reason, refused.detail) in {
            ("invalid_claim", "amr"),
            ("invalid_claim", "acr"),
            ("invalid_claim", "auth_time"),
        }
        return
    assert type(parsed.amr) is tuple and all(type(m) is str for m in parsed.amr)
    assert parsed.acr is None or (type(parsed.acr) is str and parsed.acr)
    assert parsed.auth_time is None or type(parsed.auth_time) is int


def test_tokens_from_the_testing_factory_carry_the_claims() -> None:
    """tokenward.testing mints amr/acr/auth_time (auth_time rounded up: "60.5 s ago" is at most
    that old); a Verifier on
    the factory's key and clock reads them; a bad one is refused through the same path."""
    tokens = TokenFactory(clock=FakeClock(NOW))
    verifier = Verifier(tokens.issuer, key=tokens.public_jwk, clock=tokens.clock)
    verified = verifier.verify(
        tokens.issue("alice", amr=["pwd", "otp"], acr="aal2", auth_time=NOW - 60.5)
    )
    assert (verified.amr, verified.acr, verified.auth_time) == (("pwd", "otp"), "aal2", NOW - 60)
    assert verified.raw["amr"] == ["pwd", "otp"]
    plain = verifier.verify(tokens.issue("alice"))
    assert (plain.amr, plain.acr, plain.auth_time) == ((), None, None)
    assert "acr" not in plain.raw
    with pytest.raises(VerificationError) as refused:
        verifier.verify(tokens.issue("alice", acr=""))
    assert (refused.value.reason, refused.value.detail) == ("invalid_claim", "acr")


def test_the_new_claims_pickle_and_go_through_asdict() -> None:
    """Claims with amr/acr/auth_time can still be cached and queued, and compare by them."""
    parsed = parse(amr=["pwd", "otp"], acr="aal2", auth_time=NOW - 5)
    assert pickle.loads(pickle.dumps(parsed)) == parsed  # noqa: S301 - our own bytes
    data = dataclasses.asdict(parsed)
    assert (data["amr"], data["acr"], data["auth_time"]) == (("pwd", "otp"), "aal2", NOW - 5)
    assert parsed != dataclasses.replace(parsed, acr="aal1")
    # Made positionally as before step-up existed, raw is still the tenth field.
    made = Claims("u", "s", "j", ISSUER, NOW, NOW + 60, (), (), (), {"k": 1})
    assert made.raw == {"k": 1} and made.acr is None


# -- the ACR order ------------------------------------------------------------------------------


def test_tokenwards_acr_values_are_the_nist_assurance_levels_in_order() -> None:
    """aal1 < aal2 < aal3 (NIST SP 800-63B); one value may be given as a string."""
    assert ACR_LEVELS == ("aal1", "aal2", "aal3")
    assert acr_satisfies("aal3", "aal2") and not acr_satisfies("a", "aal2")


@pytest.mark.parametrize(
    ("acr", "required", "met"),
    [
        ("aal1", ["aal1"], True),
        ("aal2", ["aal1"], True),
        ("aal3", ["aal1"], True),
        ("aal2", ["aal2"], True),
        ("aal3", ["aal2"], True),  # require_acr("aal2") accepts aal2 and aal3
        ("aal1", ["aal2"], False),
        ("aal2", ["aal3"], False),
        (None, ["aal1"], False),  # no acr meets nothing
        ("AAL2", ["aal2"], False),  # ACR values are case-sensitive
        ("aal2 ", ["aal2"], False),
        ("urn:example:gold", ["urn:example:gold"], True),  # unknown values: exact match only
        ("urn:example:gold", ["aal1"], False),
        ("aal3", ["urn:example:gold"], False),
        ("urn:example:platinum", ["urn:example:gold"], False),
        ("aal1", ["aal3", "aal1"], True),  # one of several
        ("urn:example:gold", ["aal2", "urn:example:gold"], True),
        ("aal1", [], False),
    ],
)
def test_the_acr_order(acr: str | None, required: list[str], met: bool) -> None:
    """A stronger aal meets a weaker requirement; anything else only meets itself."""
    assert acr_satisfies(acr, required) is met
    if required:
        shortfall = StepUp(required).shortfall(claims(acr=acr), NoClock())
        assert (shortfall is None) is met


# -- max_age on a hand-moved clock --------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "met"),
    [
        (0, True),
        (299, True),
        (300, True),  # now - auth_time <= max_age: the edge passes
        (300.5, False),
        (301, False),
        (-LEEWAY, True),  # auth_time ahead of this clock (skew the parser allowed)
    ],
)
def test_max_age_boundaries(elapsed: float, met: bool) -> None:
    """At most max_age seconds since auth_time, measured on the clock given."""
    requirement = StepUp(max_age=300)
    clock = FakeClock(NOW + elapsed)
    description = requirement.shortfall(claims(auth_time=NOW), clock)
    assert description == (None if met else "More recent authentication is required")


def test_max_age_zero_means_this_very_second() -> None:
    """max_age=0 is allowed (RFC 9470: a non-negative integer): an authentication now."""
    assert StepUp(max_age=0).shortfall(claims(auth_time=NOW), FakeClock(NOW)) is None
    assert StepUp(max_age=0).shortfall(claims(auth_time=NOW), FakeClock(NOW + 1)) is not None


def test_a_token_without_auth_time_fails_any_max_age() -> None:
    """No auth_time, no proof of a recent authentication."""
    description = StepUp(max_age=10**9).shortfall(claims(acr="aal3"), FakeClock(NOW))
    assert description == "More recent authentication is required"


def test_the_clock_is_read_only_for_a_max_age_and_advancing_it_ages_the_authentication() -> None:
    """An acr-only requirement reads no clock; with max_age the clock given is the one used."""
    assert StepUp("aal2").shortfall(claims(acr="aal2"), NoClock()) is None
    clock = FakeClock(NOW)
    requirement = StepUp("aal2", max_age=60)
    fresh = claims(acr="aal2", auth_time=NOW)
    assert requirement.shortfall(fresh, clock) is None
    clock.advance(61)
    assert requirement.shortfall(fresh, clock) == "More recent authentication is required"


@pytest.mark.parametrize(
    ("acr_values", "max_age"),
    [
        ((), None),  # requires nothing: a mistake, not a pass
        ((), -1),
        ((), 1.5),
        ((), True),
        ((), "300"),
        (("",), None),
        (("aal2 aal3",), None),  # one value with a space would read as two in the challenge
        (('aal2"',), None),
        (("aal\\2",), None),
        (("aal2\r\n",), None),
        (("niveau-élevé",), None),
        ((2,), None),
    ],
)
def test_a_requirement_that_cannot_be_stated_is_refused_when_made(
    acr_values: tuple[Any, ...], max_age: Any
) -> None:
    """StepUp checks its own values at definition (import time, in the glue)."""
    with pytest.raises(ValueError, match=r"ACR value|max_age|requirement"):
        StepUp(acr_values, max_age)


def test_one_acr_value_may_be_a_string() -> None:
    assert StepUp("aal2").acr_values == ("aal2",)
    assert StepUp(["aal2", "urn:example:gold"], 60) == StepUp(("aal2", "urn:example:gold"), 60)


# -- the answer (RFC 9470 3) ----------------------------------------------------------------------


def test_rfc_9470_figure_2_an_acr_challenge() -> None:
    """Too weak: 401 insufficient_user_authentication naming the acr_values required."""
    denial = StepUp("myACR").denial(claims(acr="aal1"), NoClock(), REALM)
    assert denial is not None
    assert (denial.status, denial.detail) == (401, "insufficient user authentication")
    assert denial.headers == {
        "WWW-Authenticate": 'Bearer realm="api", error="insufficient_user_authentication", '
        'error_description="A different authentication level is required", '
        'acr_values="myACR"'
    }


def test_rfc_9470_figure_3_a_max_age_challenge() -> None:
    """Too old: the challenge names max_age."""
    denial = StepUp(max_age=5).denial(claims(auth_time=NOW - 6), FakeClock(NOW), REALM)
    assert denial is not None and denial.status == 401
    assert denial.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_user_authentication", '
        'error_description="More recent authentication is required", max_age="5"'
    )


@pytest.mark.parametrize(
    ("token", "description"),
    [
        (claims(acr="aal1", auth_time=NOW), "A different authentication level is required"),
        (claims(acr="aal2", auth_time=NOW - 301), "More recent authentication is required"),
        (
            claims(acr="aal1", auth_time=NOW - 301),
            "A different authentication level and more recent authentication are required",
        ),
        (claims(), "A different authentication level and more recent authentication are required"),
    ],
)
def test_a_combined_requirement_names_all_of_it_whatever_fell_short(
    token: Claims, description: str
) -> None:
    """acr_values and max_age both appear whenever both are required, so the client's next
    authorization request asks for everything at once; the description says what fell short."""
    denial = StepUp("aal2", max_age=300).denial(token, FakeClock(NOW), REALM)
    assert denial is not None
    assert denial.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_user_authentication", '
        f'error_description="{description}", acr_values="aal2", max_age="300"'
    )


def test_several_acr_values_are_space_separated_in_order_of_preference() -> None:
    denial = StepUp(["aal3", "aal2"]).denial(claims(), NoClock(), REALM)
    assert denial is not None
    assert denial.headers["WWW-Authenticate"].endswith('acr_values="aal3 aal2"')


def test_a_token_that_meets_the_requirement_gets_no_denial() -> None:
    token = claims(acr="aal3", auth_time=NOW - 300)
    assert StepUp(["aal2"], 300).denial(token, FakeClock(NOW), REALM) is None


def test_challenge_builds_the_step_up_parameters_and_is_unchanged_without_them() -> None:
    """challenge() (public) gains acr_values and max_age; earlier calls give what they gave."""
    assert challenge("api", "insufficient_scope", ["notes:read"]) == (
        'Bearer realm="api", error="insufficient_scope", scope="notes:read"'
    )
    assert challenge("api") == 'Bearer realm="api"'
    assert challenge("api", "insufficient_user_authentication", acr_values=["aal2"], max_age=0) == (
        'Bearer realm="api", error="insufficient_user_authentication", acr_values="aal2", '
        'max_age="0"'
    )


# -- the plain check, for any framework -----------------------------------------------------------


def test_verifier_step_up_denial_uses_the_verifiers_clock_and_realm() -> None:
    """verifier.step_up_denial(claims, "aal2", max_auth_age=...): None when met, else the 401
    to answer with, its max_age measured on the verifier's clock and its realm named."""
    tokens = TokenFactory(clock=FakeClock(NOW))
    verifier = Verifier(tokens.issuer, key=tokens.public_jwk, clock=tokens.clock, realm="payments")
    token = verifier.verify(tokens.issue(acr="aal2", auth_time=NOW))
    assert verifier.step_up_denial(token, "aal2", max_auth_age=300) is None
    assert verifier.step_up_denial(token, "aal1") is None
    assert verifier.clock is tokens.clock
    tokens.clock.advance(301)
    denial = verifier.step_up_denial(token, "aal2", max_auth_age=300)
    assert denial is not None and denial.status == 401
    assert denial.headers["WWW-Authenticate"] == (
        'Bearer realm="payments", error="insufficient_user_authentication", '
        'error_description="More recent authentication is required", '
        'acr_values="aal2", max_age="300"'
    )
    too_weak = verifier.step_up_denial(token, "aal3")
    assert too_weak is not None and 'acr_values="aal3"' in too_weak.headers["WWW-Authenticate"]
    with pytest.raises(ValueError, match="requirement"):
        verifier.step_up_denial(token)
