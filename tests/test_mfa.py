"""A second factor over HTTP (docs/mfa.md): TOTP enrolment, the pending sign-in, recovery
codes, replay, step-up and reauthentication, every sign-in pathway, on both databases.

Codes are computed as an authenticator app computes them (pyotp, from the secret the
enrolment showed), at the test's clock; mails arrive at a real SMTP server on loopback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from sqlalchemy import select, text, update
from support import PASSWORD, PROBLEM, Api, FakeClock, refresh_cookie, without_request_id
from support.smtp import SmtpServer, mail_settings_for

from tokenward.app.resource_servers import ClientService
from tokenward.storage.models import EventRow, MfaChallengeRow, MfaFactorRow
from tokenward.verify import Verifier

TYPE = "urn:tokenward:problem:"
NEW_PASSWORD = "another long enough passphrase 8"


@pytest.fixture
def mfa_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings_overrides(smtp: SmtpServer, mfa_settings: dict[str, Any]) -> dict[str, Any]:
    return mail_settings_for(smtp, **{"app_url": "https://app.example", **mfa_settings})


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def claims(access: str) -> dict[str, Any]:
    return dict(jwt.decode(access, options={"verify_signature": False}))


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == TYPE + code
    return body


class Totp:
    """An authenticator app: the secret from the enrolment, codes at the test's clock."""

    def __init__(self, secret: str, clock: FakeClock) -> None:
        self.app = pyotp.TOTP(secret)
        self.clock = clock

    def now(self) -> str:
        return self.app.at(self.clock.time())

    def at_step(self, offset: int) -> str:
        return self.app.at(self.clock.time() + 30 * offset)

    def next(self) -> str:
        """The next step's code, after moving the clock there (a code is good once)."""
        self.clock.advance(30)
        return self.now()


async def enrolled(api: Api, clock: FakeClock, email: str = "ada@example.com") -> dict[str, Any]:
    """Register, sign in, enrol and confirm a TOTP factor; what a test needs of it."""
    access, refresh = await api.signed_up(email)
    started = await api.http.post("/auth/mfa/totp/enroll", headers=bearer(access))
    assert started.status_code == 200, started.text
    body = started.json()
    totp = Totp(body["secret"], clock)
    done = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={"factor_id": body["factor_id"], "code": totp.now()},
        headers=bearer(access),
    )
    assert done.status_code == 200, done.text
    return {
        "access": access,
        "refresh": refresh,
        "totp": totp,
        "factor_id": body["factor_id"],
        "recovery_codes": done.json()["recovery_codes"],
        "enrolment": body,
    }


async def pending(api: Api, email: str = "ada@example.com") -> str:
    response = await api.login(email)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is True
    return str(body["mfa_token"])


async def verify(api: Api, mfa_token: str, code: str, method: str = "totp") -> httpx.Response:
    return await api.http.post(
        "/auth/mfa/verify", json={"mfa_token": mfa_token, "method": method, "code": code}
    )


async def events(service: Any, kind: str) -> list[EventRow]:
    async with service.db.read() as db:
        return list((await db.scalars(select(EventRow).where(EventRow.type == kind))).all())


# -- enrolment -------------------------------------------------------------------------------


async def test_enrolment_shows_the_secret_once_and_confirming_gives_recovery_codes(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    enrolment = factor["enrolment"]
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={enrolment['secret']}" in enrolment["otpauth_uri"]
    assert "issuer=tokenward" in enrolment["otpauth_uri"]
    assert len(enrolment["secret"]) == 32  # 160 bits, base32
    assert enrolment["qr_svg"].startswith("<svg")
    codes = factor["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    listed = await api.http.get("/auth/mfa/factors", headers=bearer(factor["access"]))
    assert listed.status_code == 200
    body = listed.json()
    assert body["recovery_codes_remaining"] == 10
    assert [f["id"] for f in body["factors"]] == [factor["factor_id"]]
    assert enrolment["secret"] not in listed.text
    assert listed.headers["cache-control"] == "no-store"


async def test_a_second_factor_adds_no_recovery_codes_and_needs_aal2(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    # The session signed in with a password only (aal1): adding a factor needs aal2.
    refused = await api.http.post("/auth/mfa/totp/enroll", headers=bearer(factor["access"]))
    body = problem(refused, 401, "insufficient-user-authentication")
    assert body["acr_values"] == "aal2"
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="aal2"' in challenge
    stepped = await api.http.post(
        "/auth/reauthenticate",
        json={"method": "totp", "code": factor["totp"].next()},
        headers=bearer(factor["access"]),
    )
    assert stepped.status_code == 200, stepped.text
    access = stepped.json()["access_token"]
    assert claims(access)["acr"] == "aal2"
    started = await api.http.post("/auth/mfa/totp/enroll", headers=bearer(access))
    assert started.status_code == 200
    second = Totp(started.json()["secret"], clock)
    done = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={"factor_id": started.json()["factor_id"], "code": second.now()},
        headers=bearer(access),
    )
    assert done.status_code == 200
    assert done.json()["recovery_codes"] is None
    listed = (await api.http.get("/auth/mfa/factors", headers=bearer(access))).json()
    assert len(listed["factors"]) == 2
    assert listed["recovery_codes_remaining"] == 10


async def test_enrolment_needs_a_recent_authentication(api: Api, clock: FakeClock) -> None:
    access, _ = await api.signed_up()
    clock.advance(11 * 60)
    # A refreshed token of the old sign-in says the same auth_time: still too old.
    refused = await api.http.post("/auth/mfa/totp/enroll", headers=bearer(access))
    assert refused.status_code == 401
    assert refused.json()["type"] == TYPE + "insufficient-user-authentication"
    assert 'max_age="600"' in refused.headers["www-authenticate"]
    stepped = await api.http.post(
        "/auth/reauthenticate", json={"password": PASSWORD}, headers=bearer(access)
    )
    assert stepped.status_code == 200
    fresh = stepped.json()["access_token"]
    assert claims(fresh)["auth_time"] == int(clock.time())
    assert claims(fresh)["acr"] == "aal1"  # a password keeps the level
    assert (await api.http.post("/auth/mfa/totp/enroll", headers=bearer(fresh))).status_code == 200


async def test_a_wrong_confirming_code_is_422_and_confirms_nothing(
    api: Api, clock: FakeClock
) -> None:
    access, _ = await api.signed_up()
    started = (await api.http.post("/auth/mfa/totp/enroll", headers=bearer(access))).json()
    totp = Totp(started["secret"], clock)
    wrong = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={"factor_id": started["factor_id"], "code": totp.at_step(5)},
        headers=bearer(access),
    )
    problem(wrong, 422, "invalid-mfa-code")
    listed = (await api.http.get("/auth/mfa/factors", headers=bearer(access))).json()
    assert listed == {"factors": [], "recovery_codes_remaining": 0}
    assert (await api.login("ada@example.com")).json().get("mfa_required") is None


async def test_an_unconfirmed_factor_expires(api: Api, clock: FakeClock) -> None:
    access, _ = await api.signed_up()
    started = (await api.http.post("/auth/mfa/totp/enroll", headers=bearer(access))).json()
    clock.advance(10 * 60 + 1)
    late = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={"factor_id": started["factor_id"], "code": Totp(started["secret"], clock).now()},
        headers=bearer(access),
    )
    problem(late, 404, "unknown-factor")


# -- the pending sign-in ---------------------------------------------------------------------


async def test_password_login_of_an_enrolled_user_gives_no_token_and_no_cookie(
    api: Api, clock: FakeClock
) -> None:
    await enrolled(api, clock)
    response = await api.login("ada@example.com")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "mfa_required",
        "mfa_token",
        "methods",
        "expires_in",
        "enrollment_required",
    }
    assert body["methods"] == ["totp", "recovery_code"]
    assert body["expires_in"] == 300
    assert body["enrollment_required"] is False
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    mfa_token = body["mfa_token"]
    # The mfa_token is no token anywhere else.
    assert (await api.me(mfa_token)).status_code == 401
    assert (await api.refresh(mfa_token)).status_code == 401
    listed = await api.http.get("/auth/mfa/factors", headers=bearer(mfa_token))
    assert listed.status_code == 401
    # Only its hash is stored.
    async with api_service(api).db.read() as db:
        stored = (await db.scalars(select(MfaChallengeRow))).all()
    assert mfa_token not in {row.token_hash for row in stored}
    assert [e.detail for e in await events(api_service(api), "mfa.required")] == [
        {"enrolling": False}
    ]


def api_service(api: Api) -> Any:
    transport = api.http._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.service  # type: ignore[attr-defined]


async def test_totp_completes_the_sign_in_and_refreshes_keep_amr_acr_auth_time(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    mfa_token = await pending(api)
    signed_in_at = int(clock.time())
    done = await verify(api, mfa_token, factor["totp"].next())
    assert done.status_code == 200, done.text
    first = claims(done.json()["access_token"])
    assert first["amr"] == ["pwd", "otp", "mfa"]
    assert first["acr"] == "aal2"
    assert signed_in_at <= first["auth_time"] <= int(clock.time())
    refresh = refresh_cookie(done)
    for _ in range(3):
        clock.advance(16 * 60)  # past the access token's expiry each time
        again = await api.refresh(refresh)
        assert again.status_code == 200, again.text
        refresh = refresh_cookie(again)
        later = claims(again.json()["access_token"])
        assert (later["amr"], later["acr"], later["auth_time"]) == (
            first["amr"],
            first["acr"],
            first["auth_time"],
        )
    # The token endpoint's refresh grant says the same.
    oauth = await api.http.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert claims(oauth.json()["access_token"])["amr"] == ["pwd", "otp", "mfa"]
    kinds = [e.type for e in await events(api_service(api), "mfa.verified")]
    assert kinds == ["mfa.verified"]


async def test_a_password_only_session_says_aal1(api: Api) -> None:
    access, refresh = await api.signed_up()
    said = claims(access)
    assert said["amr"] == ["pwd"] and said["acr"] == "aal1"
    again = claims((await api.refresh(refresh)).json()["access_token"])
    assert again["amr"] == ["pwd"] and again["auth_time"] == said["auth_time"]


async def test_the_pending_sign_in_is_single_use(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    mfa_token = await pending(api)
    assert (await verify(api, mfa_token, factor["totp"].next())).status_code == 200
    again = await verify(api, mfa_token, factor["totp"].next())
    problem(again, 401, "mfa-failed")
    assert "set-cookie" not in again.headers


async def test_the_pending_sign_in_lives_five_minutes(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    mfa_token = await pending(api)
    clock.advance(301)
    problem(await verify(api, mfa_token, factor["totp"].now()), 401, "mfa-failed")


async def test_five_wrong_codes_end_the_pending_sign_in(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    mfa_token = await pending(api)
    totp = factor["totp"]
    totp.next()
    wrong = totp.at_step(3)
    answers = [await verify(api, mfa_token, wrong) for _ in range(5)]
    assert {a.status_code for a in answers} == {401}
    # The sixth attempt, with the right code, is refused like the rest, byte for byte.
    sixth = await verify(api, mfa_token, totp.now())
    assert without_request_id(sixth) == without_request_id(answers[0])
    assert len(await events(api_service(api), "mfa.failed")) == 5
    # A new sign-in with the right code still works: the account is not locked by 5.
    assert (await verify(api, await pending(api), totp.now())).status_code == 200


@pytest.mark.parametrize("mfa_settings", [{"rate_limits": True}])
async def test_wrong_codes_are_limited_per_account_across_sign_ins(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    totp = factor["totp"]
    totp.next()
    wrong = totp.at_step(3)
    for _ in range(2):
        mfa_token = await pending(api)
        for _ in range(5):
            problem(await verify(api, mfa_token, wrong), 401, "mfa-failed")
    refused = await verify(api, await pending(api), totp.now())
    problem(refused, 429, "rate-limited")
    assert int(refused.headers["retry-after"]) > 0


async def test_every_refusal_is_one_answer(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    totp = factor["totp"]
    mfa_token = await pending(api)
    wrong = await verify(api, mfa_token, totp.at_step(4))
    malformed = await verify(api, "twm_" + "x" * 10, totp.now())
    unknown = await verify(api, "twm_" + "A" * 43, totp.now())
    # The confirming step was used by the enrolment: the same code is a replay.
    replay = await verify(api, mfa_token, totp.now())
    for answer in (malformed, unknown, replay):
        assert answer.status_code == wrong.status_code == 401
        assert without_request_id(answer) == without_request_id(wrong)
    assert len(await events(api_service(api), "mfa.replay_rejected")) == 1


# -- TOTP codes: the window and replay -------------------------------------------------------


async def test_codes_of_t_and_t_minus_1_only(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    totp = factor["totp"]
    clock.advance(120)
    for code in (totp.at_step(-2), totp.at_step(1), "000000" if totp.now() != "000000" else "1"):
        problem(await verify(api, await pending(api), code), 401, "mfa-failed")
    assert (await verify(api, await pending(api), totp.at_step(-1))).status_code == 200
    clock.advance(30)
    assert (await verify(api, await pending(api), totp.now())).status_code == 200


async def test_a_code_is_accepted_once_across_sign_ins(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    code = factor["totp"].next()
    first, second = await pending(api), await pending(api)
    assert (await verify(api, first, code)).status_code == 200
    problem(await verify(api, second, code), 401, "mfa-failed")
    # And an older step, once a newer one was used, is no good either.
    clock.advance(30)
    newer = factor["totp"].now()
    assert (await verify(api, second, newer)).status_code == 200
    problem(await verify(api, await pending(api), code), 401, "mfa-failed")


async def test_ten_concurrent_submissions_of_a_code_one_succeeds(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    code = factor["totp"].next()
    tokens = [await pending(api) for _ in range(10)]
    answers = await asyncio.gather(*(verify(api, t, code) for t in tokens))
    assert sorted(a.status_code for a in answers) == [200] + [401] * 9
    assert len(await events(api_service(api), "mfa.replay_rejected")) == 9


# -- recovery codes --------------------------------------------------------------------------


async def test_recovery_codes_sign_in_once_each(
    api: Api, clock: FakeClock, smtp: SmtpServer
) -> None:
    factor = await enrolled(api, clock)
    code = factor["recovery_codes"][3]
    done = await verify(api, await pending(api), code, "recovery_code")
    assert done.status_code == 200, done.text
    assert claims(done.json()["access_token"])["acr"] == "aal2"
    # Typed loosely: lower case, no dashes, spaces.
    loose = factor["recovery_codes"][4].replace("-", " ").lower()
    assert (await verify(api, await pending(api), loose, "recovery_code")).status_code == 200
    problem(await verify(api, await pending(api), code, "recovery_code"), 401, "mfa-failed")
    access = done.json()["access_token"]
    listed = (await api.http.get("/auth/mfa/factors", headers=bearer(access))).json()
    assert listed["recovery_codes_remaining"] == 8
    used = await events(api_service(api), "mfa.recovery_code_used")
    assert [e.detail for e in used] == [{"remaining": 9}, {"remaining": 8}]
    mails = await smtp.arrived(3, to="ada@example.com")  # enrolled, then each code used
    assert "8 are left" in mails[-1].text
    assert code not in "".join(m.text + m.html for m in mails)


async def test_regenerating_kills_the_old_set(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    access = (await verify(api, await pending(api), factor["totp"].next())).json()["access_token"]
    regenerated = await api.http.post("/auth/mfa/recovery-codes/regenerate", headers=bearer(access))
    assert regenerated.status_code == 200
    new_codes = regenerated.json()["recovery_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(factor["recovery_codes"])
    old = factor["recovery_codes"][0]
    problem(await verify(api, await pending(api), old, "recovery_code"), 401, "mfa-failed")
    assert (await verify(api, await pending(api), new_codes[0], "recovery_code")).status_code == 200
    assert len(await events(api_service(api), "mfa.recovery_codes_regenerated")) == 1


async def test_without_a_factor_there_is_nothing_to_regenerate_or_remove(api: Api) -> None:
    """404, not a step-up challenge no one could meet."""
    access, _ = await api.signed_up()
    regenerate = await api.http.post("/auth/mfa/recovery-codes/regenerate", headers=bearer(access))
    problem(regenerate, 404, "unknown-factor")
    problem(
        await api.http.delete("/auth/mfa/factors/nope", headers=bearer(access)),
        404,
        "unknown-factor",
    )


async def test_regenerating_needs_aal2(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    refused = await api.http.post(
        "/auth/mfa/recovery-codes/regenerate", headers=bearer(factor["access"])
    )
    problem(refused, 401, "insufficient-user-authentication")


# -- removing a factor -----------------------------------------------------------------------


async def test_removing_the_last_factor_needs_aal2_and_takes_the_codes(
    api: Api, clock: FakeClock, smtp: SmtpServer
) -> None:
    factor = await enrolled(api, clock)
    path = f"/auth/mfa/factors/{factor['factor_id']}"
    problem(
        await api.http.delete(path, headers=bearer(factor["access"])),
        401,
        "insufficient-user-authentication",
    )
    access = (await verify(api, await pending(api), factor["totp"].next())).json()["access_token"]
    problem(
        await api.http.delete("/auth/mfa/factors/nope", headers=bearer(access)),
        404,
        "unknown-factor",
    )
    clock.advance(11 * 60)  # aal2, but no longer recent
    stale = await api.http.delete(path, headers=bearer(access))
    assert 'max_age="600"' in stale.headers["www-authenticate"]
    access = (
        await api.http.post(
            "/auth/reauthenticate",
            json={"method": "totp", "code": factor["totp"].now()},
            headers=bearer(access),
        )
    ).json()["access_token"]
    assert (await api.http.delete(path, headers=bearer(access))).status_code == 204
    listed = (await api.http.get("/auth/mfa/factors", headers=bearer(access))).json()
    assert listed == {"factors": [], "recovery_codes_remaining": 0}
    login = await api.login("ada@example.com")
    assert "access_token" in login.json()  # a password signs in again
    mails = await smtp.arrived(2, to="ada@example.com")
    assert [m.subject for m in mails] == [
        "Two-factor authentication was turned on",
        "An authenticator was removed from your account",
    ]


# -- reauthentication ------------------------------------------------------------------------


async def test_reauthentication_renews_auth_time_for_later_refreshes(
    api: Api, clock: FakeClock
) -> None:
    _, refresh = await api.signed_up()
    clock.advance(20 * 60)
    refreshed = await api.refresh(refresh)
    access, refresh = refreshed.json()["access_token"], refresh_cookie(refreshed)
    fresh = await api.http.post(
        "/auth/reauthenticate", json={"password": PASSWORD}, headers=bearer(access)
    )
    assert fresh.status_code == 200
    assert fresh.headers["cache-control"] == "no-store"
    renewed = claims(fresh.json()["access_token"])["auth_time"]
    assert renewed == int(clock.time())
    clock.advance(16 * 60)
    later = await api.refresh(refresh)
    assert claims(later.json()["access_token"])["auth_time"] == renewed
    assert len(await events(api_service(api), "reauthenticated")) == 1


async def test_reauthentication_refuses_a_wrong_password_or_code(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    wrong = await api.http.post(
        "/auth/reauthenticate",
        json={"password": "not it at all 123"},
        headers=bearer(factor["access"]),
    )
    problem(wrong, 401, "invalid-credentials")
    replay = await api.http.post(
        "/auth/reauthenticate",
        json={"method": "totp", "code": factor["totp"].now()},  # the confirming step
        headers=bearer(factor["access"]),
    )
    problem(replay, 401, "mfa-failed")
    both = await api.http.post(
        "/auth/reauthenticate",
        json={"password": PASSWORD, "method": "totp", "code": "123456"},
        headers=bearer(factor["access"]),
    )
    problem(both, 422, "invalid-request")
    assert (
        await api.http.post("/auth/reauthenticate", json={"password": PASSWORD})
    ).status_code == 401


# -- every pathway ---------------------------------------------------------------------------


async def test_the_token_endpoint_asks_for_the_second_factor(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    refused = await api.http.post(
        "/auth/token",
        data={"grant_type": "password", "username": "ada@example.com", "password": PASSWORD},
    )
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "invalid_grant"
    assert body["error_description"] == "mfa_required"
    assert "access_token" not in body and "refresh_token" not in body
    grant = "urn:tokenward:params:oauth:grant-type:mfa"
    done = await api.http.post(
        "/auth/token",
        data={"grant_type": grant, "mfa_token": body["mfa_token"], "code": factor["totp"].next()},
    )
    assert done.status_code == 200, done.text
    tokens = done.json()
    assert tokens["refresh_token"] and claims(tokens["access_token"])["acr"] == "aal2"
    again = await api.http.post(
        "/auth/token",
        data={"grant_type": grant, "mfa_token": body["mfa_token"], "code": factor["totp"].next()},
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_a_password_reset_does_not_skip_the_second_factor(
    api: Api, clock: FakeClock, smtp: SmtpServer
) -> None:
    factor = await enrolled(api, clock)
    before_reset = await pending(api)
    assert (
        await api.http.post("/auth/password/forgot", json={"email": "ada@example.com"})
    ).status_code == 202
    mails = await smtp.arrived(2, to="ada@example.com")
    reset = await api.http.post(
        "/auth/password/reset", json={"token": mails[-1].token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code in (200, 204), reset.text
    assert "set-cookie" not in reset.headers
    # A sign-in pending from before the reset cannot complete.
    problem(await verify(api, before_reset, factor["totp"].next()), 401, "mfa-failed")
    after = await api.login("ada@example.com", NEW_PASSWORD)
    assert after.json()["mfa_required"] is True
    assert (await verify(api, after.json()["mfa_token"], factor["totp"].next())).status_code == 200


async def test_an_email_change_does_not_skip_the_second_factor(
    api: Api, clock: FakeClock, smtp: SmtpServer
) -> None:
    factor = await enrolled(api, clock)
    access = (await verify(api, await pending(api), factor["totp"].next())).json()["access_token"]
    asked = await api.http.post(
        "/auth/email",
        json={"new_email": "ada@new.example", "current_password": PASSWORD},
        headers=bearer(access),
    )
    assert asked.status_code == 202, asked.text
    (confirmation,) = await smtp.arrived(1, to="ada@new.example")
    confirmed = await api.http.post("/auth/email/confirm", json={"token": confirmation.token})
    assert confirmed.status_code in (200, 204), confirmed.text
    after = await api.login("ada@new.example")
    assert after.json()["mfa_required"] is True
    assert "set-cookie" not in after.headers


# -- TOKENWARD_MFA ---------------------------------------------------------------------------


@pytest.mark.parametrize("mfa_settings", [{"mfa": "required"}])
async def test_required_mode_lets_a_user_without_a_factor_only_enrol(
    api: Api, clock: FakeClock
) -> None:
    assert (await api.register("ada@example.com")).status_code == 201
    login = await api.login("ada@example.com")
    body = login.json()
    assert body["mfa_required"] is True and body["enrollment_required"] is True
    assert body["methods"] == []
    assert "set-cookie" not in login.headers
    mfa_token = body["mfa_token"]
    problem(await verify(api, mfa_token, "123456"), 401, "mfa-failed")
    started = await api.http.post("/auth/mfa/totp/enroll", json={"mfa_token": mfa_token})
    assert started.status_code == 200, started.text
    totp = Totp(started.json()["secret"], clock)
    done = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={
            "factor_id": started.json()["factor_id"],
            "code": totp.now(),
            "mfa_token": mfa_token,
        },
    )
    assert done.status_code == 200, done.text
    answer = done.json()
    assert len(answer["recovery_codes"]) == 10
    assert claims(answer["access_token"])["acr"] == "aal2"
    assert refresh_cookie(done)
    # The pending sign-in was spent by the confirmation.
    again = await api.http.post("/auth/mfa/totp/enroll", json={"mfa_token": mfa_token})
    problem(again, 401, "mfa-failed")
    assert (await api.login("ada@example.com")).json()["methods"] == ["totp", "recovery_code"]


@pytest.mark.parametrize("mfa_settings", [{"mfa": "off"}])
async def test_off_mode_has_no_mfa_endpoints(api: Api) -> None:
    access, _ = await api.signed_up()
    assert (await api.http.post("/auth/mfa/totp/enroll", headers=bearer(access))).status_code == 404
    assert (
        await api.http.post(
            "/auth/reauthenticate", json={"password": PASSWORD}, headers=bearer(access)
        )
    ).status_code == 200


# -- nothing secret at rest ------------------------------------------------------------------


async def test_the_database_holds_no_totp_secret_and_no_recovery_code(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    mfa_token = await pending(api)
    await verify(api, mfa_token, factor["recovery_codes"][0], "recovery_code")
    service = api_service(api)
    dump: list[str] = []
    async with service.db.read() as db:
        connection = await db.connection()
        if connection.dialect.name == "sqlite":
            tables = (
                await db.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
            ).scalars()
        else:
            tables = (
                await db.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                )
            ).scalars()
        for table in list(tables):
            query = f'SELECT * FROM "{table}"'  # noqa: S608 - names the catalogue gave
            rows = (await db.execute(text(query))).all()
            dump.extend(repr(tuple(row)) for row in rows)
    everything = "\n".join(dump)
    secret = factor["enrolment"]["secret"]
    assert secret not in everything and secret.lower() not in everything
    for code in factor["recovery_codes"]:
        assert code not in everything and code.replace("-", "") not in everything
    assert mfa_token not in everything
    assert any("totp" in line for line in dump)  # the factor's row was in the dump


async def test_no_code_or_secret_is_logged(
    api: Api, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    factor = await enrolled(api, clock)
    mfa_token = await pending(api)
    await verify(api, mfa_token, factor["totp"].at_step(7))
    await verify(api, mfa_token, factor["recovery_codes"][1], "recovery_code")
    logged = caplog.text
    for secret in (factor["enrolment"]["secret"], mfa_token, factor["recovery_codes"][1]):
        assert secret not in logged


# -- resource servers ------------------------------------------------------------------------


async def test_a_resource_server_demands_the_second_factor_in_one_line(
    api: Api, clock: FakeClock
) -> None:
    """tokenward.verify, given tokenward's own tokens: a password-only token falls short of
    aal2 (RFC 9470's challenge); a token of a second-factor sign-in meets it, and a refresh
    of it later still says when the user authenticated (so max_age can refuse it)."""
    factor = await enrolled(api, clock)
    (jwk,) = (await api.http.get("/.well-known/jwks.json")).json()["keys"]
    verifier = Verifier(api_service(api).settings.issuer, key=jwk, clock=clock)
    password_only = verifier.verify(factor["access"])
    denial = verifier.step_up_denial(password_only, "aal2")
    assert denial is not None and denial.status == 401
    assert 'error="insufficient_user_authentication"' in denial.headers["WWW-Authenticate"]
    assert 'acr_values="aal2"' in denial.headers["WWW-Authenticate"]

    done = await verify(api, await pending(api), factor["totp"].next())
    strong = verifier.verify(done.json()["access_token"])
    assert (strong.amr, strong.acr) == (("pwd", "otp", "mfa"), "aal2")
    assert verifier.step_up_denial(strong, "aal2", max_auth_age=300) is None
    clock.advance(301)
    refreshed = verifier.verify((await api.refresh(refresh_cookie(done))).json()["access_token"])
    assert refreshed.acr == "aal2" and refreshed.auth_time == strong.auth_time
    late = verifier.step_up_denial(refreshed, "aal2", max_auth_age=300)
    assert late is not None and 'max_age="300"' in late.headers["WWW-Authenticate"]


async def test_introspection_answers_how_the_user_authenticated(api: Api, clock: FakeClock) -> None:
    factor = await enrolled(api, clock)
    service = api_service(api)
    client, secret = await ClientService(service).create("orders-api")
    done = await verify(api, await pending(api), factor["totp"].next())
    answer = await api.http.post(
        "/auth/introspect",
        data={"token": done.json()["access_token"]},
        auth=(client.id, secret),
    )
    body = answer.json()
    assert body["active"] is True
    assert (body["amr"], body["acr"]) == (["pwd", "otp", "mfa"], "aal2")
    assert isinstance(body["auth_time"], int)


# -- what the security review found (each fixed, each kept fixed here) -----------------------


@pytest.mark.parametrize("mfa_settings", [{"mfa": "required"}])
async def test_an_old_enrolment_sign_in_cannot_add_a_factor_once_the_user_has_one(
    api: Api, clock: FakeClock
) -> None:
    """Someone with the password got an enrolling mfa_token; the user then enrolled their own
    factor: the old token can neither enrol nor confirm one (and so cannot sign in)."""
    assert (await api.register("ada@example.com")).status_code == 201
    stolen = (await api.login("ada@example.com")).json()["mfa_token"]
    attacker = (await api.http.post("/auth/mfa/totp/enroll", json={"mfa_token": stolen})).json()
    mine = (await api.login("ada@example.com")).json()["mfa_token"]
    started = (await api.http.post("/auth/mfa/totp/enroll", json={"mfa_token": mine})).json()
    done = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={
            "factor_id": started["factor_id"],
            "code": Totp(started["secret"], clock).now(),
            "mfa_token": mine,
        },
    )
    assert done.status_code == 200
    # The attacker's enrolment was replaced by the user's (one enrolment at a time) and the
    # stolen token may not start another, nor confirm anything.
    problem(
        await api.http.post("/auth/mfa/totp/enroll", json={"mfa_token": stolen}),
        401,
        "mfa-failed",
    )
    refused = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={
            "factor_id": attacker["factor_id"],
            "code": Totp(attacker["secret"], clock).now(),
            "mfa_token": stolen,
        },
    )
    assert refused.status_code in (401, 404)
    assert "set-cookie" not in refused.headers
    access = done.json()["access_token"]
    listed = (await api.http.get("/auth/mfa/factors", headers=bearer(access))).json()
    assert [f["id"] for f in listed["factors"]] == [started["factor_id"]]


async def test_a_password_keeps_aal2_only_within_twelve_hours_of_the_second_factor(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    done = await verify(api, await pending(api), factor["totp"].next())
    clock.advance(6 * 3600)
    refreshed = await api.refresh(refresh_cookie(done))
    soon = await api.http.post(
        "/auth/reauthenticate",
        json={"password": PASSWORD},
        headers=bearer(refreshed.json()["access_token"]),
    )
    assert claims(soon.json()["access_token"])["acr"] == "aal2"
    # A password now and then does not stretch the second factor's window.
    clock.advance(7 * 3600)
    refreshed = await api.refresh(refresh_cookie(refreshed))
    access = refreshed.json()["access_token"]
    late = await api.http.post(
        "/auth/reauthenticate", json={"password": PASSWORD}, headers=bearer(access)
    )
    said = claims(late.json()["access_token"])
    assert (said["amr"], said["acr"]) == (["pwd"], "aal1")
    # The session says so from then on, and removing the factor asks for it again.
    again = claims((await api.refresh(refresh_cookie(refreshed))).json()["access_token"])
    assert again["acr"] == "aal1"
    problem(
        await api.http.delete(
            f"/auth/mfa/factors/{factor['factor_id']}",
            headers=bearer(late.json()["access_token"]),
        ),
        401,
        "insufficient-user-authentication",
    )


async def test_concurrent_wrong_codes_cannot_exceed_the_attempts(
    api: Api, clock: FakeClock
) -> None:
    factor = await enrolled(api, clock)
    totp = factor["totp"]
    totp.next()
    mfa_token = await pending(api)
    wrong = [totp.at_step(5 + n) for n in range(8)]
    answers = await asyncio.gather(*(verify(api, mfa_token, code) for code in wrong))
    assert {a.status_code for a in answers} == {401}
    problem(await verify(api, mfa_token, totp.now()), 401, "mfa-failed")
    async with api_service(api).db.read() as db:
        (row,) = (await db.scalars(select(MfaChallengeRow))).all()
    assert row.attempts == 5 and row.used_at is None
    assert len(await events(api_service(api), "mfa.failed")) == 5


@pytest.mark.parametrize("mfa_settings", [{"mfa": "off"}])
async def test_off_mode_ignores_codes_everywhere(api: Api) -> None:
    access, _ = await api.signed_up()
    refused = await api.http.post(
        "/auth/token",
        data={
            "grant_type": "urn:tokenward:params:oauth:grant-type:mfa",
            "mfa_token": "twm_" + "A" * 43,
            "code": "123456",
        },
    )
    assert refused.json()["error"] == "unsupported_grant_type"
    problem(
        await api.http.post(
            "/auth/reauthenticate",
            json={"method": "totp", "code": "123456"},
            headers=bearer(access),
        ),
        401,
        "mfa-failed",
    )


async def test_a_secret_moved_onto_another_factor_does_not_unseal(
    api: Api, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The sealed secret is bound to its factor and user: a row copied in the database (the
    attacker's own secret onto the victim's factor) matches no code."""
    victim = await enrolled(api, clock)
    api.http.cookies.clear()
    attacker = await enrolled(api, clock, "mallory@example.com")
    service = api_service(api)
    async with service.db.write() as db:
        stolen = await db.scalar(
            select(MfaFactorRow.secret).where(MfaFactorRow.id == attacker["factor_id"])
        )
        await db.execute(
            update(MfaFactorRow).where(MfaFactorRow.id == victim["factor_id"]).values(secret=stolen)
        )
    code = attacker["totp"].next()
    problem(await verify(api, await pending(api), code), 401, "mfa-failed")
    assert "does not unseal" in caplog.text
