"""Passkeys over HTTP (docs/passkeys.md), on both databases, with a software authenticator
(tests/support/webauthn.py) answering the server's options as a browser would: registration,
passwordless sign-in, the second factor after a password, and every refusal. Chromium's
virtual authenticator drives the same through the demo page in test_browser_passkeys.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import cbor2
import httpx
import jwt
import pytest
from sqlalchemy import select
from support import PROBLEM, Api, FakeClock, refresh_cookie, without_request_id
from support.webauthn import SoftAuthenticator, b64url, unb64url

from tokenward.core.events import OPERATOR
from tokenward.storage.models import EventRow, PasskeyRow, WebauthnChallengeRow

TYPE = "urn:tokenward:problem:"
ORIGIN = "http://localhost:8000"
MODE: dict[str, Any] = {
    "passkeys": "passwordless",
    "webauthn_rp_id": "localhost",
    "webauthn_origins": ORIGIN,
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(MODE)


@pytest.fixture
def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator("localhost", ORIGIN)


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def claims(access: str) -> dict[str, Any]:
    return dict(jwt.decode(access, options={"verify_signature": False}))


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == TYPE + code


def service_of(api: Api) -> Any:
    transport = api.http._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.service  # type: ignore[attr-defined]


async def events(api: Api, kind: str) -> list[EventRow]:
    async with service_of(api).db.read() as db:
        return list((await db.scalars(select(EventRow).where(EventRow.type == kind))).all())


async def registered(
    api: Api, authenticator: SoftAuthenticator, access: str, name: str = "Laptop"
) -> httpx.Response:
    options = await api.http.post("/auth/passkeys/register/options", headers=bearer(access))
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json())
    return await api.http.post(
        "/auth/passkeys/register",
        json={"credential": credential, "name": name},
        headers=bearer(access),
    )


async def passwordless(api: Api, authenticator: SoftAuthenticator) -> tuple[str, dict[str, Any]]:
    """Login options, and the authenticator's answer to them (not sent yet)."""
    answer = (await api.http.post("/auth/passkeys/login/options")).json()
    return answer["flow_id"], authenticator.get(answer["options"])


# -- registering ------------------------------------------------------------------------------


async def test_register_then_sign_in_with_no_username(
    api: Api, authenticator: SoftAuthenticator, clock: FakeClock
) -> None:
    access, _ = await api.signed_up()
    options = (
        await api.http.post("/auth/passkeys/register/options", headers=bearer(access))
    ).json()
    assert options["rp"] == {"id": "localhost", "name": "tokenward"}
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    # The user handle is random, never the email or the user id.
    assert "ada" not in options["user"]["id"]
    assert options["user"]["id"] != claims(access)["sub"]
    credential = authenticator.create(options)
    done = await api.http.post(
        "/auth/passkeys/register",
        json={"credential": credential, "name": "  My   laptop "},
        headers=bearer(access),
    )
    assert done.status_code == 201, done.text
    passkey = done.json()
    assert passkey["name"] == "My laptop"
    assert passkey["synced"] is False and passkey["last_used_at"] is None
    listed = (await api.http.get("/auth/passkeys", headers=bearer(access))).json()
    assert [p["id"] for p in listed["passkeys"]] == [passkey["id"]]
    # A second passkey needs aal2 now that the user holds a second factor.
    weak = await api.http.post("/auth/passkeys/register/options", headers=bearer(access))
    problem(weak, 401, "insufficient-user-authentication")

    flow_id, assertion = await passwordless(api, authenticator)
    signed_in = await api.http.post(
        "/auth/passkeys/login", json={"flow_id": flow_id, "credential": assertion}
    )
    assert signed_in.status_code == 200, signed_in.text
    said = claims(signed_in.json()["access_token"])
    assert (said["amr"], said["acr"]) == (["hwk", "mfa"], "aal2")
    assert refresh_cookie(signed_in)
    refreshed = claims((await api.refresh(refresh_cookie(signed_in))).json()["access_token"])
    assert refreshed["amr"] == ["hwk", "mfa"]
    used = await events(api, "passkey.used")
    assert len(used) == 1 and used[0].session_id == said["sid"]
    assert len(await events(api, "passkey.registered")) == 1
    # At aal2, a second registration may start, and excludes the first credential.
    strong = bearer(signed_in.json()["access_token"])
    again = (await api.http.post("/auth/passkeys/register/options", headers=strong)).json()
    assert [c["id"] for c in again["excludeCredentials"]] == [credential["id"]]


async def test_a_synced_passkey_is_recorded_as_such(api: Api) -> None:
    synced = SoftAuthenticator("localhost", ORIGIN, backup_eligible=True, counts=False)
    access, _ = await api.signed_up()
    done = await registered(api, synced, access)
    assert done.json()["synced"] is True and done.json()["backed_up"] is True
    flow_id, assertion = await passwordless(api, synced)
    signed_in = await api.http.post(
        "/auth/passkeys/login", json={"flow_id": flow_id, "credential": assertion}
    )
    assert claims(signed_in.json()["access_token"])["amr"] == ["swk", "mfa"]
    # A counter that stays at 0 (synced passkeys keep none) is no regression.
    again_flow, again = await passwordless(api, synced)
    ok = await api.http.post(
        "/auth/passkeys/login", json={"flow_id": again_flow, "credential": again}
    )
    assert ok.status_code == 200
    assert await events(api, "passkey.counter_regressed") == []


async def test_registration_refusals(api: Api, authenticator: SoftAuthenticator) -> None:
    access, _ = await api.signed_up()
    options = (
        await api.http.post("/auth/passkeys/register/options", headers=bearer(access))
    ).json()
    credential = authenticator.create(options)
    # Another origin, then a challenge never issued: 422, nothing kept.
    elsewhere = SoftAuthenticator("localhost", "http://localhost:9999")
    foreign = elsewhere.create(
        (await api.http.post("/auth/passkeys/register/options", headers=bearer(access))).json()
    )
    problem(
        await api.http.post(
            "/auth/passkeys/register", json={"credential": foreign}, headers=bearer(access)
        ),
        422,
        "invalid-passkey",
    )
    forged = authenticator.create({**options, "challenge": "A" * 43})
    problem(
        await api.http.post(
            "/auth/passkeys/register", json={"credential": forged}, headers=bearer(access)
        ),
        422,
        "invalid-passkey",
    )
    for junk in ({}, {"response": {"clientDataJSON": "!!"}}, {"response": "x"}):
        problem(
            await api.http.post(
                "/auth/passkeys/register", json={"credential": junk}, headers=bearer(access)
            ),
            422,
            "invalid-passkey",
        )
    # The right one still works once; its challenge then is spent.
    first = await api.http.post(
        "/auth/passkeys/register", json={"credential": credential}, headers=bearer(access)
    )
    assert first.status_code == 201
    replay = await api.http.post(
        "/auth/passkeys/register", json={"credential": credential}, headers=bearer(access)
    )
    problem(replay, 422, "invalid-passkey")
    async with service_of(api).db.read() as db:
        assert len((await db.scalars(select(PasskeyRow))).all()) == 1


async def test_registration_needs_a_recent_authentication(
    api: Api, authenticator: SoftAuthenticator, clock: FakeClock
) -> None:
    access, refresh = await api.signed_up()
    clock.advance(11 * 60)
    access = (await api.refresh(refresh)).json()["access_token"]
    refused = await api.http.post("/auth/passkeys/register/options", headers=bearer(access))
    problem(refused, 401, "insufficient-user-authentication")


# -- passwordless refusals ------------------------------------------------------------------


async def test_without_user_verification_the_sign_in_is_refused(
    api: Api, authenticator: SoftAuthenticator
) -> None:
    access, _ = await api.signed_up()
    assert (await registered(api, authenticator, access)).status_code == 201
    authenticator.user_verified = False
    flow_id, assertion = await passwordless(api, authenticator)
    refused = await api.http.post(
        "/auth/passkeys/login", json={"flow_id": flow_id, "credential": assertion}
    )
    problem(refused, 401, "passkey-failed")
    assert "set-cookie" not in refused.headers


async def test_a_replayed_assertion_is_refused(api: Api, authenticator: SoftAuthenticator) -> None:
    access, _ = await api.signed_up()
    await registered(api, authenticator, access)
    flow_id, assertion = await passwordless(api, authenticator)
    body = {"flow_id": flow_id, "credential": assertion}
    assert (await api.http.post("/auth/passkeys/login", json=body)).status_code == 200
    replayed = await api.http.post("/auth/passkeys/login", json=body)
    problem(replayed, 401, "passkey-failed")


async def test_concurrent_submissions_of_one_assertion_sign_in_once(
    api: Api, authenticator: SoftAuthenticator
) -> None:
    access, _ = await api.signed_up()
    await registered(api, authenticator, access)
    flow_id, assertion = await passwordless(api, authenticator)
    body = {"flow_id": flow_id, "credential": assertion}
    answers = await asyncio.gather(
        *(api.http.post("/auth/passkeys/login", json=body) for _ in range(5))
    )
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401, 401]


async def test_other_refusals_are_one_answer(api: Api, authenticator: SoftAuthenticator) -> None:
    access, _ = await api.signed_up()
    await registered(api, authenticator, access)
    _, assertion = await passwordless(api, authenticator)
    answers = []
    # Another origin.
    elsewhere = SoftAuthenticator("localhost", "https://evil.example")
    elsewhere.credentials = authenticator.credentials
    other_flow, foreign = await passwordless(api, elsewhere)
    answers.append(
        await api.http.post(
            "/auth/passkeys/login", json={"flow_id": other_flow, "credential": foreign}
        )
    )
    # Another RP id.
    phished = SoftAuthenticator("evil.example", ORIGIN)
    phished.credentials = authenticator.credentials
    phish_flow, phishing = await passwordless(api, phished)
    answers.append(
        await api.http.post(
            "/auth/passkeys/login", json={"flow_id": phish_flow, "credential": phishing}
        )
    )
    # An unknown credential, a flow id that is not the challenge's, a tampered signature.
    stranger = SoftAuthenticator("localhost", ORIGIN)
    stranger.create({"user": {"id": "AAAA"}, "challenge": "AAAA"})
    s_flow, s_assertion = await passwordless(api, stranger)
    answers.append(
        await api.http.post(
            "/auth/passkeys/login", json={"flow_id": s_flow, "credential": s_assertion}
        )
    )
    answers.append(
        await api.http.post(
            "/auth/passkeys/login",
            json={"flow_id": "00000000-0000-0000-0000-000000000000", "credential": assertion},
        )
    )
    t_flow, tampered = await passwordless(api, authenticator)
    tampered["response"]["signature"] = tampered["response"]["signature"][:-4] + "AAAA"
    answers.append(
        await api.http.post(
            "/auth/passkeys/login", json={"flow_id": t_flow, "credential": tampered}
        )
    )
    for answer in answers:
        problem(answer, 401, "passkey-failed")
        assert without_request_id(answer) == without_request_id(answers[0])


@pytest.mark.parametrize(
    ("settings_overrides", "refused"),
    [({**MODE}, False), ({**MODE, "webauthn_counter_regression": "reject"}, True)],
)
async def test_a_counter_that_goes_backwards_is_recorded_and_by_policy_refused(
    api: Api, authenticator: SoftAuthenticator, refused: bool
) -> None:
    access, _ = await api.signed_up()
    await registered(api, authenticator, access)
    flow_id, first = await passwordless(api, authenticator)
    assert (
        await api.http.post("/auth/passkeys/login", json={"flow_id": flow_id, "credential": first})
    ).status_code == 200
    authenticator.credentials[-1].sign_count = 0  # a clone, behind the original
    flow_id, cloned = await passwordless(api, authenticator)
    answer = await api.http.post(
        "/auth/passkeys/login", json={"flow_id": flow_id, "credential": cloned}
    )
    assert answer.status_code == (401 if refused else 200)
    (regressed,) = await events(api, "passkey.counter_regressed")
    assert regressed.detail == {
        "passkey_id": regressed.detail["passkey_id"],
        "stored": 1,
        "presented": 1,
        "refused": refused,
    }


# -- the second factor ----------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{**MODE, "passkeys": "second-factor"}])
async def test_a_passkey_as_the_second_factor_after_a_password(
    api: Api, authenticator: SoftAuthenticator
) -> None:
    access, _ = await api.signed_up()
    await registered(api, authenticator, access)
    # Passwordless is off in this mode.
    assert (await api.http.post("/auth/passkeys/login/options")).status_code == 404
    login = await api.login("ada@example.com")
    body = login.json()
    assert body["mfa_required"] is True and body["methods"] == ["webauthn"]
    assert "set-cookie" not in login.headers
    options = await api.http.post(
        "/auth/mfa/webauthn/options", json={"mfa_token": body["mfa_token"]}
    )
    assert options.status_code == 200
    assertion = authenticator.get(options.json())
    assert [c["id"] for c in options.json()["allowCredentials"]] == [assertion["id"]]
    done = await api.http.post(
        "/auth/mfa/verify",
        json={"mfa_token": body["mfa_token"], "method": "webauthn", "credential": assertion},
    )
    assert done.status_code == 200, done.text
    said = claims(done.json()["access_token"])
    assert (said["amr"], said["acr"]) == (["pwd", "hwk", "mfa"], "aal2")
    # The same assertion again, on a new sign-in: refused (its challenge is spent).
    again = (await api.login("ada@example.com")).json()["mfa_token"]
    problem(
        await api.http.post(
            "/auth/mfa/verify",
            json={"mfa_token": again, "method": "webauthn", "credential": assertion},
        ),
        401,
        "mfa-failed",
    )


async def test_removing_a_passkey_needs_aal2_and_recent(
    api: Api, authenticator: SoftAuthenticator
) -> None:
    access, _ = await api.signed_up()
    passkey = (await registered(api, authenticator, access)).json()
    path = f"/auth/passkeys/{passkey['id']}"
    problem(
        await api.http.delete(path, headers=bearer(access)), 401, "insufficient-user-authentication"
    )
    renamed = await api.http.patch(path, json={"name": "Old laptop"}, headers=bearer(access))
    assert renamed.json()["name"] == "Old laptop"
    flow_id, assertion = await passwordless(api, authenticator)
    strong = (
        await api.http.post(
            "/auth/passkeys/login", json={"flow_id": flow_id, "credential": assertion}
        )
    ).json()["access_token"]
    assert (await api.http.delete(path, headers=bearer(strong))).status_code == 204
    assert (await api.http.get("/auth/passkeys", headers=bearer(strong))).json() == {"passkeys": []}
    assert len(await events(api, "passkey.removed")) == 1
    problem(await api.http.delete(path, headers=bearer(strong)), 404, "unknown-factor")


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_off_by_default(api: Api) -> None:
    access, _ = await api.signed_up()
    assert (
        await api.http.post("/auth/passkeys/register/options", headers=bearer(access))
    ).status_code == 404
    assert (await api.http.post("/auth/passkeys/login/options")).status_code == 404


async def test_challenges_are_stored_hashed_and_single_use(
    api: Api, authenticator: SoftAuthenticator
) -> None:
    answer = (await api.http.post("/auth/passkeys/login/options")).json()
    async with service_of(api).db.read() as db:
        (row,) = (await db.scalars(select(WebauthnChallengeRow))).all()
    assert answer["options"]["challenge"] not in row.challenge_hash
    assert row.purpose == "login" and row.used_at is None


# -- parsing edge cases -----------------------------------------------------------------------


def _client_data(credential: dict[str, Any], **changes: Any) -> str:
    data = json.loads(unb64url(credential["response"]["clientDataJSON"]))
    return b64url(json.dumps({**data, **changes}).encode())


REGISTRATION_EDGES = {
    "attestation not CBOR": lambda c: c["response"].update(attestationObject=b64url(b"\xff\x00")),
    "attestation cut short": lambda c: c["response"].update(
        attestationObject=c["response"]["attestationObject"][:40]
    ),
    "client data of an assertion": lambda c: c["response"].update(
        clientDataJSON=_client_data(c, type="webauthn.get")
    ),
    "client data not JSON": lambda c: c["response"].update(clientDataJSON=b64url(b"{oops")),
    "client data not base64url": lambda c: c["response"].update(clientDataJSON="%%%"),
    "a packed attestation without its statement": lambda c: c["response"].update(
        attestationObject=b64url(
            cbor2.dumps(
                {
                    **cbor2.loads(unb64url(c["response"]["attestationObject"])),
                    "fmt": "packed",
                }
            )
        )
    ),
    "no response": lambda c: c.pop("response"),
    "a response of the wrong type": lambda c: c.update(response=[1, 2]),
}


@pytest.mark.parametrize("edge", list(REGISTRATION_EDGES))
async def test_a_malformed_registration_is_422_and_keeps_nothing(
    api: Api, authenticator: SoftAuthenticator, edge: str
) -> None:
    access, _ = await api.signed_up()
    options = (
        await api.http.post("/auth/passkeys/register/options", headers=bearer(access))
    ).json()
    credential = authenticator.create(options)
    REGISTRATION_EDGES[edge](credential)
    answer = await api.http.post(
        "/auth/passkeys/register", json={"credential": credential}, headers=bearer(access)
    )
    problem(answer, 422, "invalid-passkey")
    async with service_of(api).db.read() as db:
        assert (await db.scalars(select(PasskeyRow))).all() == []


ASSERTION_EDGES = {
    "authenticator data cut short": lambda c: c["response"].update(
        authenticatorData=c["response"]["authenticatorData"][:20]
    ),
    "signature not base64url": lambda c: c["response"].update(signature="***"),
    "signature of other data": lambda c: c["response"].update(
        authenticatorData=b64url(unb64url(c["response"]["authenticatorData"]) + b"\x00")
    ),
    "client data of a registration": lambda c: c["response"].update(
        clientDataJSON=_client_data(c, type="webauthn.create")
    ),
    "no rawId": lambda c: c.pop("rawId"),
    "a rawId of another credential": lambda c: c.update(rawId=b64url(b"another one")),
    "client data of nothing": lambda c: c["response"].update(clientDataJSON=b64url(b"[]")),
}


@pytest.mark.parametrize("edge", list(ASSERTION_EDGES))
async def test_a_malformed_assertion_is_the_one_401(
    api: Api, authenticator: SoftAuthenticator, edge: str
) -> None:
    access, _ = await api.signed_up()
    await registered(api, authenticator, access)
    flow_id, assertion = await passwordless(api, authenticator)
    ASSERTION_EDGES[edge](assertion)
    answer = await api.http.post(
        "/auth/passkeys/login", json={"flow_id": flow_id, "credential": assertion}
    )
    problem(answer, 401, "passkey-failed")
    assert "set-cookie" not in answer.headers


async def test_a_passkey_steps_a_password_session_up_to_aal2(
    api: Api, authenticator: SoftAuthenticator, clock: FakeClock
) -> None:
    access, refresh = await api.signed_up()
    await registered(api, authenticator, access)
    clock.advance(20 * 60)
    refreshed = await api.refresh(refresh)
    access = refreshed.json()["access_token"]
    options = await api.http.post("/auth/passkeys/reauthenticate/options", headers=bearer(access))
    assert options.status_code == 200
    assertion = authenticator.get(options.json())
    stepped = await api.http.post(
        "/auth/reauthenticate",
        json={"method": "webauthn", "credential": assertion},
        headers=bearer(access),
    )
    assert stepped.status_code == 200, stepped.text
    said = claims(stepped.json()["access_token"])
    assert (said["amr"], said["acr"]) == (["pwd", "hwk", "mfa"], "aal2")
    assert said["auth_time"] == int(clock.time())
    later = claims((await api.refresh(refresh_cookie(refreshed))).json()["access_token"])
    assert later["acr"] == "aal2"
    # The same assertion again: its challenge is spent.
    again = await api.http.post(
        "/auth/reauthenticate",
        json={"method": "webauthn", "credential": assertion},
        headers=bearer(access),
    )
    problem(again, 401, "mfa-failed")


async def test_an_operator_reset_removes_passkeys_too(
    api: Api, authenticator: SoftAuthenticator
) -> None:
    access, _ = await api.signed_up()
    await registered(api, authenticator, access)
    service = service_of(api)
    assert (await api.login("ada@example.com")).json()["methods"] == ["webauthn"]
    assert await service.mfa.reset(claims(access)["sub"], OPERATOR) == 1
    assert "access_token" in (await api.login("ada@example.com")).json()
    flow_id, assertion = await passwordless(api, authenticator)
    problem(
        await api.http.post(
            "/auth/passkeys/login", json={"flow_id": flow_id, "credential": assertion}
        ),
        401,
        "passkey-failed",
    )
