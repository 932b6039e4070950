"""Sessions you can see and end: list, revoke one, logout-all/others, password change, events."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from support import PASSWORD, Api, FakeClock, refresh_cookie, without_request_id

NEW_PASSWORD = "a brand new passphrase 2026"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def sid(access: str) -> str:
    return str(jwt.decode(access, options={"verify_signature": False})["sid"])


async def login(
    api: Api, email: str = "ada@example.com", ua: str = FIREFOX, **kw: Any
) -> tuple[str, str]:
    response = await api.login(email, headers={"User-Agent": ua}, **kw)
    assert response.status_code == 200, response.text
    return response.json()["access_token"], refresh_cookie(response)


async def test_two_logins_are_listed_with_current_on_the_callers(api: Api) -> None:
    """Each session shows device, IP and times; only the caller's own is current."""
    await api.register("ada@example.com")
    laptop, _ = await login(api, ua=FIREFOX)
    phone, _ = await login(api, ua=IPHONE)
    response = await api.http.get("/auth/sessions", headers=bearer(laptop))
    assert response.status_code == 200
    sessions = {s["id"]: s for s in response.json()["sessions"]}
    assert set(sessions) == {sid(laptop), sid(phone)}
    assert sessions[sid(laptop)]["current"] is True
    assert sessions[sid(phone)]["current"] is False
    assert sessions[sid(laptop)]["device"] == "Firefox on Linux"
    assert sessions[sid(phone)]["device"] == "Safari on iOS"
    assert sessions[sid(phone)]["ip"] == "203.0.113.7"
    assert set(sessions[sid(phone)]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "device",
        "ip",
        "current",
    }
    from_phone = await api.http.get("/auth/sessions", headers=bearer(phone))
    assert [s["id"] for s in from_phone.json()["sessions"] if s["current"]] == [sid(phone)]


async def test_sessions_of_other_users_are_not_listed(api: Api) -> None:
    await api.register("ada@example.com")
    await api.register("grace@example.com")
    ada, _ = await login(api)
    await login(api, "grace@example.com")
    sessions = (await api.http.get("/auth/sessions", headers=bearer(ada))).json()["sessions"]
    assert [s["id"] for s in sessions] == [sid(ada)]


async def test_revoking_one_session_leaves_the_other_able_to_refresh(api: Api) -> None:
    """DELETE /auth/sessions/{id} ends that session only, at once."""
    await api.register("ada@example.com")
    laptop, laptop_refresh = await login(api)
    phone, phone_refresh = await login(api, ua=IPHONE)
    response = await api.http.delete(f"/auth/sessions/{sid(phone)}", headers=bearer(laptop))
    assert response.status_code == 204
    assert (await api.me(phone)).status_code == 401
    assert (await api.refresh(phone_refresh)).status_code == 401
    assert (await api.refresh(laptop_refresh)).status_code == 200
    assert (await api.me(laptop)).status_code == 200


async def test_another_users_session_answers_404_and_stays_alive(api: Api) -> None:
    """Never 403: the answer does not confirm that the session exists."""
    await api.register("ada@example.com")
    await api.register("grace@example.com")
    ada, _ = await login(api)
    grace, grace_refresh = await login(api, "grace@example.com")
    response = await api.http.delete(f"/auth/sessions/{sid(grace)}", headers=bearer(ada))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    unknown = await api.http.delete("/auth/sessions/not-a-session", headers=bearer(ada))
    assert unknown.status_code == 404
    assert without_request_id(unknown) == without_request_id(response)
    assert (await api.me(grace)).status_code == 200
    assert (await api.refresh(grace_refresh)).status_code == 200


async def test_logout_all_kills_every_refresh_and_access_token(api: Api) -> None:
    await api.register("ada@example.com")
    first, first_refresh = await login(api)
    second, second_refresh = await login(api, ua=IPHONE)
    response = await api.http.post("/auth/logout-all", headers=bearer(first))
    assert response.status_code == 204
    assert 'tw_refresh=""' in response.headers["set-cookie"]
    for access in (first, second):
        assert (await api.me(access)).status_code == 401
    for token in (first_refresh, second_refresh):
        assert (await api.refresh(token)).status_code == 401


async def test_logout_others_keeps_only_the_callers_session(api: Api) -> None:
    await api.register("ada@example.com")
    mine, my_refresh = await login(api)
    other, other_refresh = await login(api, ua=IPHONE)
    assert (await api.http.post("/auth/logout-others", headers=bearer(mine))).status_code == 204
    assert (await api.me(mine)).status_code == 200
    assert (await api.refresh(my_refresh)).status_code == 200
    assert (await api.me(other)).status_code == 401
    assert (await api.refresh(other_refresh)).status_code == 401


async def test_password_change_ends_the_others_but_keeps_the_callers(api: Api) -> None:
    await api.register("ada@example.com")
    mine, my_refresh = await login(api)
    other, other_refresh = await login(api, ua=IPHONE)
    response = await api.http.post(
        "/auth/password",
        headers=bearer(mine),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 204
    assert (await api.me(mine)).status_code == 200
    assert (await api.refresh(my_refresh)).status_code == 200
    assert (await api.me(other)).status_code == 401
    assert (await api.refresh(other_refresh)).status_code == 401
    assert (await api.login("ada@example.com", PASSWORD)).status_code == 401
    assert (await api.login("ada@example.com", NEW_PASSWORD)).status_code == 200


async def test_password_change_with_a_wrong_current_password_changes_nothing(api: Api) -> None:
    """Same 401 as a failed login; the other sessions and the old password stay."""
    await api.register("ada@example.com")
    mine, _ = await login(api)
    other, _ = await login(api, ua=IPHONE)
    response = await api.http.post(
        "/auth/password",
        headers=bearer(mine),
        json={"current_password": "not my password at all", "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 401
    assert response.json()["type"] == "urn:tokenward:problem:invalid-credentials"
    assert (await api.me(other)).status_code == 200
    assert (await api.login("ada@example.com", PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    ("new_password", "rule"),
    [("short one", "password_too_short"), ("passwordpassword", "password_common")],
)
async def test_password_change_applies_the_policy(api: Api, new_password: str, rule: str) -> None:
    await api.register("ada@example.com")
    mine, _ = await login(api)
    other, _ = await login(api, ua=IPHONE)
    response = await api.http.post(
        "/auth/password",
        headers=bearer(mine),
        json={"current_password": PASSWORD, "new_password": new_password},
    )
    assert response.status_code == 422
    assert response.json()["rule"] == rule
    assert (await api.me(other)).status_code == 200
    assert (await api.login("ada@example.com", PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/auth/sessions"),
        ("DELETE", "/auth/sessions/x"),
        ("POST", "/auth/logout-all"),
        ("POST", "/auth/logout-others"),
        ("POST", "/auth/password"),
        ("GET", "/auth/events"),
    ],
)
async def test_account_endpoints_need_a_live_bearer_token(api: Api, method: str, path: str) -> None:
    await api.register("ada@example.com")
    access, refresh = await login(api)
    await api.logout(refresh)
    for headers in ({}, bearer("garbage"), bearer(access)):
        response = await api.http.request(method, path, headers=headers, json={})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_reuse_detection_is_visible_in_the_users_events(api: Api, clock: FakeClock) -> None:
    """The stable session.reuse_detected event with its detail, next to logins and refreshes."""
    await api.register("ada@example.com")
    _, stolen = await login(api, ua=FIREFOX)
    await api.refresh(stolen, headers={"User-Agent": FIREFOX})
    clock.advance(42)
    await api.refresh(stolen, headers={"User-Agent": "curl/8.5.0"})
    watcher, _ = await login(api)
    events = (await api.http.get("/auth/events", headers=bearer(watcher))).json()["events"]
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "login.succeeded",
        "session.reuse_detected",
        "session.refreshed",
        "login.succeeded",
    ]
    reuse = events[1]
    assert reuse["session_id"] == events[2]["session_id"] == events[3]["session_id"]
    assert reuse["detail"]["rotated_seconds_ago"] == pytest.approx(42)
    assert reuse["detail"]["first_use"]["user_agent"] == FIREFOX
    assert reuse["detail"]["reuse"]["user_agent"] == "curl/8.5.0"
    assert stolen not in str(events)


async def test_events_show_only_the_callers_own(api: Api) -> None:
    await api.register("ada@example.com")
    await api.register("grace@example.com")
    await api.login("grace@example.com", "wrong password for grace")
    ada, _ = await login(api)
    events = (await api.http.get("/auth/events", headers=bearer(ada))).json()["events"]
    assert {e["type"] for e in events} == {"user.registered", "login.succeeded"}


@pytest.mark.parametrize("settings_overrides", [{"refresh_ttl": "1h", "session_max_age": "1d"}])
async def test_expired_sessions_leave_the_list(api: Api, clock: FakeClock) -> None:
    await api.register("ada@example.com")
    old, _ = await login(api)
    clock.advance(3601)
    new, _ = await login(api)
    sessions = (await api.http.get("/auth/sessions", headers=bearer(new))).json()["sessions"]
    assert [s["id"] for s in sessions] == [sid(new)]
    assert (await api.me(old)).status_code == 401
