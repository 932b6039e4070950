"""PATCH /auth/me: the user's own user_metadata, a JSON Merge Patch (RFC 7396) capped at 4 KiB,
kept apart from what operators set (app_metadata, roles) and never recorded in events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from support import PROBLEM, Api, FakeClock, refresh_cookie
from support.hooks import claims_of

from tokenward.core.events import OPERATOR

EMAIL = "ada@example.com"
INVALID_METADATA = "urn:tokenward:problem:invalid-metadata"
INVALID_REQUEST = "urn:tokenward:problem:invalid-request"
CHANGED = "user.user_metadata_changed"


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def patch(api: Api, access: str, body: Any) -> httpx.Response:
    return await api.http.patch("/auth/me", json=body, headers=bearer(access))


async def patch_raw(api: Api, access: str, body: bytes) -> httpx.Response:
    headers = {**bearer(access), "Content-Type": "application/json"}
    return await api.http.patch("/auth/me", content=body, headers=headers)


async def metadata(api: Api, access: str) -> dict[str, Any]:
    """GET /auth/me's user_metadata."""
    response = await api.me(access)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["user_metadata"]
    return found


async def stored(service: Any, email: str = EMAIL) -> dict[str, Any]:
    """user_metadata as the database holds it."""
    async with service.store.read() as tx:
        account = await tx.account_by_email(email)
    assert account is not None
    return dict(account.user_metadata)


async def all_events(service: Any) -> list[Any]:
    async with service.store.read() as tx:
        return list(await tx.events(limit=1000))


async def changes(service: Any) -> list[Any]:
    return [event for event in await all_events(service) if event.type == CHANGED]


async def user_id(service: Any, email: str = EMAIL) -> str:
    async with service.store.read() as tx:
        account = await tx.account_by_email(email)
    assert account is not None
    return str(account.id)


async def signed_up_with(api: Api, value: dict[str, Any]) -> str:
    """A signed-in user whose user_metadata is ``value``; their access token."""
    access, _ = await api.signed_up()
    if value:
        response = await patch(api, access, {"user_metadata": value})
        assert response.status_code == 200, response.text
    return access


# -- merging ---------------------------------------------------------------------------------


async def test_a_new_user_has_empty_metadata(api: Api) -> None:
    """Both metadata objects exist from the start, empty."""
    access, _ = await api.signed_up()
    body = (await api.me(access)).json()
    assert (body["user_metadata"], body["app_metadata"]) == ({}, {})


async def test_patch_merges_into_user_metadata(api: Api, service: Any) -> None:
    """Each PATCH sets the members it names and keeps the others; nested objects merge. The
    answer is the user as /auth/me shows it, and the database holds the same."""
    access = await signed_up_with(api, {"theme": "dark", "lang": "en", "ui": {"density": 1}})
    response = await patch(
        api, access, {"user_metadata": {"lang": "fr", "ui": {"font": "serif"}, "tags": ["a"]}}
    )
    assert response.status_code == 200
    expected = {"theme": "dark", "lang": "fr", "ui": {"density": 1, "font": "serif"}, "tags": ["a"]}
    assert response.json()["user_metadata"] == expected
    assert response.json()["email"] == EMAIL
    assert await metadata(api, access) == expected
    assert await stored(service) == expected


async def test_null_removes_members_at_any_depth(api: Api) -> None:
    """``null`` removes a member (RFC 7396): at the top, inside an object, or one that is not
    there (no error); an array is replaced whole, nulls in it kept."""
    access = await signed_up_with(api, {"theme": "dark", "ui": {"density": 1, "font": "serif"}})
    response = await patch(
        api,
        access,
        {"user_metadata": {"theme": None, "ui": {"font": None}, "absent": None, "l": [None, 1]}},
    )
    assert response.status_code == 200
    assert await metadata(api, access) == {"ui": {"density": 1}, "l": [None, 1]}
    assert (await patch(api, access, {"user_metadata": {"ui": None, "l": None}})).status_code == 200
    assert await metadata(api, access) == {}


async def test_an_empty_patch_changes_nothing_but_is_accepted(api: Api) -> None:
    """``{"user_metadata": {}}`` is a valid merge patch that changes nothing."""
    access = await signed_up_with(api, {"theme": "dark"})
    response = await patch(api, access, {"user_metadata": {}})
    assert response.status_code == 200
    assert response.json()["user_metadata"] == {"theme": "dark"}


async def test_one_users_patch_leaves_another_users_metadata_alone(api: Api, service: Any) -> None:
    """The PATCH applies to the token's user only."""
    ada = await signed_up_with(api, {"owner": "ada"})
    bob, _ = await api.signed_up("bob@example.com")
    assert (await patch(api, bob, {"user_metadata": {"owner": "bob"}})).status_code == 200
    assert await metadata(api, ada) == {"owner": "ada"}
    assert await stored(service, "bob@example.com") == {"owner": "bob"}


async def test_concurrent_patches_of_different_members_both_land(api: Api) -> None:
    """Two tabs saving different settings at once: each merge sees the other's result (the
    account is locked while merging), so neither change is lost."""
    access, _ = await api.signed_up()
    results = await asyncio.gather(
        *(patch(api, access, {"user_metadata": {f"k{i}": i}}) for i in range(8))
    )
    assert [r.status_code for r in results] == [200] * 8
    assert await metadata(api, access) == {f"k{i}": i for i in range(8)}


# -- what PATCH cannot do --------------------------------------------------------------------


async def test_user_metadata_never_grants_roles_scope_or_app_metadata(
    api: Api, service: Any
) -> None:
    """Members named like the operator's fields are just the user's data: /auth/me and the next
    access token show no role, scope or app_metadata from them."""
    access, refresh = await api.signed_up()
    sneaky = {"roles": ["admin"], "scope": "admin:users", "app_metadata": {"admin": True}}
    response = await patch(api, access, {"user_metadata": sneaky})
    assert response.status_code == 200
    body = (await api.me(access)).json()
    assert body["user_metadata"] == sneaky
    assert (body["roles"], body["scope"], body["app_metadata"]) == ([], "", {})
    rotated = await api.refresh(refresh)
    claims = claims_of(rotated.json()["access_token"])
    assert "roles" not in claims
    assert "scope" not in claims
    assert "app_metadata" not in claims


async def test_patch_leaves_app_metadata_as_the_operator_set_it(api: Api, service: Any) -> None:
    """app_metadata is the operator's: shown beside user_metadata, untouched by the user."""
    access = await signed_up_with(api, {})
    await service.user_admin.set_app_metadata(await user_id(service), {"plan": "pro"}, OPERATOR)
    response = await patch(api, access, {"user_metadata": {"plan": "free"}})
    assert response.status_code == 200
    assert response.json()["app_metadata"] == {"plan": "pro"}
    assert response.json()["user_metadata"] == {"plan": "free"}
    body = (await api.me(access)).json()
    assert (body["app_metadata"], body["user_metadata"]) == ({"plan": "pro"}, {"plan": "free"})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {"user_metadata": {"x": 1}, "app_metadata": {"admin": True}}, id="app_metadata"
        ),
        pytest.param({"app_metadata": {"admin": True}}, id="app_metadata alone"),
        pytest.param({"user_metadata": {"x": 1}, "roles": ["admin"]}, id="roles"),
        pytest.param({"user_metadata": {"x": 1}, "scope": "admin:users"}, id="scope"),
        pytest.param({"user_metadata": {"x": 1}, "email": "eve@example.com"}, id="email"),
        pytest.param({"user_metadata": {"x": 1}, "id": "someone-else"}, id="id"),
    ],
)
async def test_members_besides_user_metadata_are_422_and_nothing_changes(
    api: Api, service: Any, body: dict[str, Any]
) -> None:
    """A PATCH naming anything but user_metadata is refused whole: not even its user_metadata
    part is applied, and roles, app_metadata and email stay as they were."""
    access = await signed_up_with(api, {"x": 0})
    events_before = await all_events(service)
    response = await patch(api, access, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == INVALID_REQUEST
    me = (await api.me(access)).json()
    assert (me["user_metadata"], me["app_metadata"], me["roles"]) == ({"x": 0}, {}, [])
    assert me["email"] == EMAIL
    assert await all_events(service) == events_before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"user_metadata": ["theme", "dark"]}, id="array"),
        pytest.param({"user_metadata": "theme=dark"}, id="string"),
        pytest.param({"user_metadata": 1}, id="number"),
        pytest.param({"user_metadata": None}, id="null"),
        pytest.param({}, id="no user_metadata"),
        pytest.param({"theme": "dark"}, id="metadata not wrapped"),
        pytest.param([{"user_metadata": {}}], id="body an array"),
        pytest.param("user_metadata", id="body a string"),
    ],
)
async def test_a_patch_that_is_not_an_object_is_422_and_nothing_changes(
    api: Api, service: Any, body: Any
) -> None:
    """user_metadata must be a JSON object (a merge patch of an object): anything else is a
    422 problem, the stored metadata untouched."""
    access = await signed_up_with(api, {"theme": "light"})
    response = await patch(api, access, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert await metadata(api, access) == {"theme": "light"}
    assert len(await changes(service)) == 1  # the set-up's


async def test_a_body_that_is_not_json_is_refused(api: Api) -> None:
    """Malformed JSON is a 4xx problem, never a 500."""
    access = await signed_up_with(api, {"theme": "light"})
    response = await patch_raw(api, access, b'{"user_metadata": {"theme": ')
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == PROBLEM
    assert await metadata(api, access) == {"theme": "light"}


# -- the 4 KiB cap ---------------------------------------------------------------------------

CAP = 4096
FILLER = CAP - len('{"a":""}')  # a value that makes {"a": value} exactly the cap


@pytest.mark.parametrize(
    ("before", "patched"),
    [
        pytest.param({}, {"a": "x" * (FILLER + 1)}, id="one patch"),
        pytest.param({"a": "x" * 2000}, {"b": "y" * 2100}, id="merged result"),
        pytest.param({}, {"a": "é" * (FILLER // 2) + "x"}, id="UTF-8 bytes, not characters"),
        pytest.param({}, {f"k{i:04d}": i for i in range(400)}, id="many small members"),
    ],
)
async def test_metadata_over_4_kib_is_422_and_nothing_changes(
    api: Api, service: Any, before: dict[str, Any], patched: dict[str, Any]
) -> None:
    """The merged result is capped at 4096 bytes of compact UTF-8 JSON: over it, 422
    invalid-metadata, the metadata as it was and no event."""
    access = await signed_up_with(api, before)
    recorded = len(await changes(service))
    response = await patch(api, access, {"user_metadata": patched})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == INVALID_METADATA
    assert "4096" in response.json()["detail"]
    assert await metadata(api, access) == before
    assert len(await changes(service)) == recorded


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": "x" * FILLER}, id="ASCII"),
        pytest.param({"a": "é" * (FILLER // 2)}, id="two-byte characters"),
    ],
)
async def test_metadata_of_exactly_4_kib_is_accepted(api: Api, value: dict[str, Any]) -> None:
    """Exactly 4096 bytes once merged passes (the cap is inclusive)."""
    assert len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) == CAP
    access = await signed_up_with(api, {})
    response = await patch(api, access, {"user_metadata": value})
    assert response.status_code == 200, response.text
    assert await metadata(api, access) == value


async def test_removing_members_brings_full_metadata_back_under_the_cap(api: Api) -> None:
    """At the cap, a patch that removes one member and adds a smaller one is judged on the
    result, not on the patch."""
    access = await signed_up_with(api, {"a": "x" * (FILLER - 100)})
    response = await patch(api, access, {"user_metadata": {"a": None, "b": "y" * 100}})
    assert response.status_code == 200
    assert await metadata(api, access) == {"b": "y" * 100}


async def test_a_request_body_over_16_kib_is_413(api: Api) -> None:
    """No body larger than the server's request cap is parsed at all."""
    access = await signed_up_with(api, {"theme": "light"})
    response = await patch(api, access, {"user_metadata": {"a": "x" * (16 * 1024)}})
    assert response.status_code == 413
    assert await metadata(api, access) == {"theme": "light"}


async def test_deeply_nested_metadata_is_refused_as_a_problem(api: Api) -> None:
    """Nesting past the server's JSON depth limit is a 422, never a parser crash."""
    access = await signed_up_with(api, {"theme": "light"})
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"d": deep}
    response = await patch(api, access, {"user_metadata": deep})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert await metadata(api, access) == {"theme": "light"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"user_metadata": {"a": "\\ud800"}}', id="lone surrogate value"),
        pytest.param(b'{"user_metadata": {"\\udfff": 1}}', id="lone surrogate key"),
    ],
)
async def test_text_utf8_cannot_carry_is_422_not_a_server_error(api: Api, body: bytes) -> None:
    """JSON can spell a lone surrogate (``"\\ud800"``), UTF-8 (and so the database) cannot:
    the patch is invalid metadata, answered 422, the metadata unchanged."""
    access = await signed_up_with(api, {"theme": "light"})
    response = await patch_raw(api, access, body)
    assert response.status_code == 422, response.text
    assert await metadata(api, access) == {"theme": "light"}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"nul": "a\u0000b"}, id="NUL in a value"),
        pytest.param({"a\u0000b": 1}, id="NUL in a key"),
        pytest.param({"emoji": "👩🏽‍💻", "rtl": "\u202eabc"}, id="astral and bidi"),
    ],
)
async def test_unusual_text_is_kept_exactly_or_refused_but_never_a_500(
    api: Api, value: dict[str, Any]
) -> None:
    """Whatever JSON text the user saves comes back byte for byte (or is refused with 422):
    on SQLite and on PostgreSQL alike."""
    access = await signed_up_with(api, {"theme": "light"})
    response = await patch(api, access, {"user_metadata": value})
    assert response.status_code in {200, 422}, response.text
    if response.status_code == 200:
        assert await metadata(api, access) == {"theme": "light", **value}
    else:
        assert response.json()["type"] == INVALID_METADATA
        assert await metadata(api, access) == {"theme": "light"}


# -- who may PATCH ---------------------------------------------------------------------------


async def test_patch_needs_a_valid_bearer_token(api: Api, service: Any, clock: FakeClock) -> None:
    """No token, a malformed one, a refresh token, an expired one or one of an ended session:
    401 with a Bearer challenge, and nothing changed."""
    login_access, refresh = await api.signed_up()
    assert (await patch(api, login_access, {"user_metadata": {"v": 0}})).status_code == 200
    body = {"user_metadata": {"v": 1}}

    missing = await api.http.patch("/auth/me", json=body)
    attempts = [
        missing,
        await patch(api, "not-a-token", body),
        await patch(api, refresh, body),
        await api.http.patch("/auth/me", json=body, headers={"Authorization": "Basic eDp5"}),
    ]
    rotated = await api.refresh(refresh)
    clock.advance(16 * 60)  # past the 15-minute access token lifetime
    attempts.append(await patch(api, login_access, body))
    fresh = await api.refresh(refresh_cookie(rotated))
    fresh_access = fresh.json()["access_token"]
    assert (await api.logout(refresh_cookie(fresh))).status_code == 204
    attempts.append(await patch(api, fresh_access, body))  # its session ended
    for response in attempts:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"] == 'Bearer realm="tokenward"'
    assert await stored(service) == {"v": 0}
    assert len(await changes(service)) == 1


# -- events ----------------------------------------------------------------------------------


async def test_a_change_is_an_event_that_never_holds_the_values(api: Api, service: Any) -> None:
    """user.user_metadata_changed names the user and the session, never what was written or
    removed: not in the database, not in /auth/events."""
    access, _ = await api.signed_up()
    marker = "private-note-7f3a"
    assert (await patch(api, access, {"user_metadata": {"note": marker}})).status_code == 200
    assert (await patch(api, access, {"user_metadata": {"note": None}})).status_code == 200

    first, second = sorted(await changes(service), key=lambda event: event.id)
    assert first.user_id == second.user_id == await user_id(service)
    assert first.session_id == claims_of(access)["sid"]
    assert marker not in repr(await all_events(service))
    assert "note" not in repr(await all_events(service))

    listed = await api.http.get("/auth/events", headers=bearer(access))
    assert listed.status_code == 200
    assert [e["type"] for e in listed.json()["events"]].count(CHANGED) == 2
    assert marker not in listed.text
