"""Roles and permissions as a user meets them: granted, revoked, redefined or deleted by an
operator (the CLI) or a back office (the admin API), a change shows in /auth/me at once and in
the access token of the next refresh; with end_sessions, a resource server refuses the old
token within its revocation bound and the session's refresh token stops working.

Runs on SQLite and on PostgreSQL (``--database=postgresql``): both lean rotation adapters
read the grants in the rotation's own transaction, so each flow refreshes once before the
change (the PostgreSQL adapter then skips its read of a session it knows) and once after.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import PASSWORD, Api, FakeClock, acli, ok, refresh_cookie
from support.roles import AdminApi, payload, refused_within, resource_server

from tokenward.core.events import OPERATOR
from tokenward.exceptions import InvalidRoleError


async def signed_up(api: Api, email: str) -> tuple[str, str, str]:
    """Register and log in; (user id, access token, refresh token)."""
    access, refresh = await api.signed_up(email)
    return str(payload(access)["sub"]), access, refresh


async def refreshed(api: Api, refresh_token: str) -> tuple[str, str]:
    """The next (access token, refresh token) of a session."""
    response = await api.refresh(refresh_token)
    assert response.status_code == 200, response.text
    return response.json()["access_token"], refresh_cookie(response)


async def held(api: Api, access_token: str) -> tuple[list[str], str]:
    """(roles, scope) as /auth/me shows them now."""
    response = await api.me(access_token)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["roles"], body["scope"]


def grants_in(token: str) -> tuple[list[str] | None, str | None]:
    """(roles, scope) as the access token carries them; None for a claim left out."""
    claims = payload(token)
    return claims.get("roles"), claims.get("scope")


@pytest.fixture
async def admin(api: Api, service: Any) -> AdminApi:
    return await AdminApi.create(service, api.http)


# -- granting -------------------------------------------------------------------------------


async def test_a_user_without_roles_gets_tokens_without_roles_or_scope(api: Api) -> None:
    """No role: the token leaves both claims out (not empty ones), and /auth/me says so."""
    _, access, refresh = await signed_up(api, "ada@example.com")
    assert grants_in(access) == (None, None)
    access, _ = await refreshed(api, refresh)
    assert grants_in(access) == (None, None)
    assert await held(api, access) == ([], "")


async def test_a_role_granted_through_the_admin_api_is_in_me_at_once_and_in_the_next_token(
    api: Api, admin: AdminApi, app: Any, clock: FakeClock
) -> None:
    """PUT /admin/users/{id}/roles/{role}: /auth/me shows it on the very next request; the
    token in hand is unchanged (a token says what was held when it was issued); the next
    refresh's token carries the role and its permissions, as a resource server reads them."""
    created = await admin.put_role("editor", "notes:write", "notes:read", "notes:read")
    assert created.status_code == 201, created.text
    assert created.json()["permissions"] == ["notes:read", "notes:write"]
    user_id, access, refresh = await signed_up(api, "ada@example.com")
    access, refresh = await refreshed(api, refresh)
    assert grants_in(access) == (None, None)

    granted = await admin.grant(user_id, "editor")
    assert granted.status_code == 204, granted.text

    assert await held(api, access) == (["editor"], "notes:read notes:write")
    assert grants_in(access) == (None, None)
    new_access, refresh = await refreshed(api, refresh)
    assert grants_in(new_access) == (["editor"], "notes:read notes:write")

    async with resource_server(app, clock) as verifier:
        claims = await verifier.averify(new_access)
        assert claims.has_roles("editor") and claims.has_scopes("notes:read", "notes:write")
        old = await verifier.averify(access)
        assert old.roles == () and not old.has_scopes("notes:read")

    again = await admin.grant(user_id, "editor")  # holding it already: nothing to do
    assert again.status_code == 204
    assert grants_in((await refreshed(api, refresh))[0]) == (["editor"], "notes:read notes:write")


async def test_clients_of_the_token_endpoint_get_the_role_at_their_next_refresh_too(
    api: Api, admin: AdminApi
) -> None:
    """POST /auth/token (apps without cookies): the refresh_token grant's next access token
    carries a role granted meanwhile, and loses it once revoked."""
    assert (await admin.put_role("editor", "notes:read")).status_code == 201
    user_id, _, _ = await signed_up(api, "ada@example.com")

    async def token(**form: str) -> dict[str, Any]:
        response = await api.http.post("/auth/token", data=form)
        assert response.status_code == 200, response.text
        return dict(response.json())

    issued = await token(grant_type="password", username="ada@example.com", password=PASSWORD)
    issued = await token(grant_type="refresh_token", refresh_token=issued["refresh_token"])
    assert grants_in(issued["access_token"]) == (None, None)
    assert (await admin.grant(user_id, "editor")).status_code == 204
    issued = await token(grant_type="refresh_token", refresh_token=issued["refresh_token"])
    assert grants_in(issued["access_token"]) == (["editor"], "notes:read")
    assert (await admin.revoke(user_id, "editor")).status_code == 204
    issued = await token(grant_type="refresh_token", refresh_token=issued["refresh_token"])
    assert grants_in(issued["access_token"]) == (None, None)


async def test_a_role_without_permissions_is_in_roles_and_adds_no_scope(
    api: Api, admin: AdminApi
) -> None:
    """A role that grants nothing still names the user's role: `roles` without `scope`."""
    assert (await admin.put_role("beta-tester")).status_code == 201
    user_id, _, refresh = await signed_up(api, "ada@example.com")
    assert (await admin.grant(user_id, "beta-tester")).status_code == 204
    access, _ = await refreshed(api, refresh)
    assert grants_in(access) == (["beta-tester"], None)
    assert await held(api, access) == (["beta-tester"], "")


async def test_granting_what_does_not_exist_is_404_and_grants_nothing(
    api: Api, admin: AdminApi
) -> None:
    """An unknown role or user is 404 (a typo never creates anything); a name that cannot be
    a role, or a permission that would not survive the space-separated scope claim, is 422
    and changes nothing."""
    assert (await admin.put_role("editor", "notes:read")).status_code == 201
    assert (await admin.put_role("editor", "notes:read", "notes write")).status_code == 422
    assert (await admin.put_role("Editor", "notes:read")).status_code == 422
    user_id, access, _ = await signed_up(api, "ada@example.com")
    assert (await admin.grant(user_id, "editr")).status_code == 404
    assert (await admin.grant("no-such-user", "editor")).status_code == 404
    assert (await admin.grant(user_id, "Editor")).status_code == 422
    assert (await admin.revoke(user_id, "editor")).status_code == 404  # not held
    assert await held(api, access) == ([], "")
    listed = await admin.http.get("/admin/roles", auth=admin.auth)
    assert [(r["name"], r["permissions"]) for r in listed.json()["roles"]] == [
        ("editor", ["notes:read"])
    ]


# -- revoking -------------------------------------------------------------------------------


async def test_a_revoked_role_leaves_me_at_once_and_the_next_token(
    api: Api, admin: AdminApi, app: Any, clock: FakeClock
) -> None:
    """DELETE /admin/users/{id}/roles/{role}: gone from /auth/me at once and from the next
    refresh's token, the other role's permissions kept; without end_sessions the session
    lives on, and the token in hand keeps what it said until it expires."""
    assert (await admin.put_role("editor", "notes:read", "notes:write")).status_code == 201
    assert (await admin.put_role("viewer", "notes:read")).status_code == 201
    user_id, _, refresh = await signed_up(api, "ada@example.com")
    for role in ("editor", "viewer"):
        assert (await admin.grant(user_id, role)).status_code == 204
    access, refresh = await refreshed(api, refresh)
    assert grants_in(access) == (["editor", "viewer"], "notes:read notes:write")

    assert (await admin.revoke(user_id, "editor")).status_code == 204
    assert await held(api, access) == (["viewer"], "notes:read")
    new_access, refresh = await refreshed(api, refresh)
    assert grants_in(new_access) == (["viewer"], "notes:read")
    async with resource_server(app, clock) as verifier:
        assert (await verifier.averify(access)).has_roles("editor")  # until it expires

    assert (await admin.revoke(user_id, "editor")).status_code == 404
    assert (await admin.revoke(user_id, "viewer")).status_code == 204
    assert await held(api, new_access) == ([], "")
    assert grants_in((await refreshed(api, refresh))[0]) == (None, None)


async def test_revoking_with_end_sessions_refuses_the_old_token_within_the_bound(
    api: Api, admin: AdminApi, app: Any, clock: FakeClock
) -> None:
    """end_sessions=true: every session of the user ends through the revocation path, so a
    resource server following the feed refuses the old token (which still carries the role)
    within its bound; the session's refresh token is refused; other users are untouched; a
    new sign-in gets a token without the role."""
    assert (await admin.put_role("admin", "notes:purge")).status_code == 201
    user_id, _, refresh = await signed_up(api, "ada@example.com")
    _, bystander, _ = await signed_up(api, "grace@example.com")
    assert (await admin.grant(user_id, "admin")).status_code == 204
    access, refresh = await refreshed(api, refresh)
    async with resource_server(app, clock) as verifier:
        assert (await verifier.averify(access)).has_roles("admin")

        revoked = await admin.revoke(user_id, "admin", end_sessions=True)
        assert revoked.status_code == 204, revoked.text

        await refused_within(verifier, access, clock)
        assert (await verifier.averify(bystander)).roles == ()
    assert grants_in(access) == (["admin"], "notes:purge")
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.me(access)).status_code == 401
    login = await api.login("ada@example.com")
    assert login.status_code == 200
    assert grants_in(login.json()["access_token"]) == (None, None)


async def test_granting_with_end_sessions_signs_the_user_out_and_the_next_sign_in_has_it(
    api: Api, admin: AdminApi, app: Any, clock: FakeClock
) -> None:
    """end_sessions=true on a grant: the old session's tokens stop working (refresh at once,
    access at resource servers within the bound); signing in again gives the role."""
    assert (await admin.put_role("admin", "notes:purge")).status_code == 201
    user_id, _, refresh = await signed_up(api, "ada@example.com")
    access, refresh = await refreshed(api, refresh)
    async with resource_server(app, clock) as verifier:
        await verifier.averify(access)
        assert (await admin.grant(user_id, "admin", end_sessions=True)).status_code == 204
        await refused_within(verifier, access, clock)
    assert (await api.refresh(refresh)).status_code == 401
    login = await api.login("ada@example.com")
    assert grants_in(login.json()["access_token"]) == (["admin"], "notes:purge")


# -- roles redefined or deleted -------------------------------------------------------------


async def test_changed_permissions_show_in_me_at_once_and_in_the_next_token(
    api: Api, admin: AdminApi
) -> None:
    """PUT /admin/roles/{name} on an existing role replaces its permissions (200, not 201):
    every holder's /auth/me shows them at once, their next token carries them."""
    assert (await admin.put_role("editor", "notes:read")).status_code == 201
    user_id, _, refresh = await signed_up(api, "ada@example.com")
    assert (await admin.grant(user_id, "editor")).status_code == 204
    access, refresh = await refreshed(api, refresh)
    assert grants_in(access) == (["editor"], "notes:read")

    replaced = await admin.put_role("editor", "notes:write", "notes:delete")
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["permissions"] == ["notes:delete", "notes:write"]
    assert await held(api, access) == (["editor"], "notes:delete notes:write")
    access, refresh = await refreshed(api, refresh)
    assert grants_in(access) == (["editor"], "notes:delete notes:write")

    assert (await admin.put_role("editor")).status_code == 200
    assert await held(api, access) == (["editor"], "")
    assert grants_in((await refreshed(api, refresh))[0]) == (["editor"], None)


async def test_a_deleted_role_leaves_every_holder_at_the_next_refresh(
    api: Api, admin: AdminApi
) -> None:
    """DELETE /admin/roles/{name}: gone from every holder's /auth/me at once and from their
    next token (their other roles kept), their sessions alive; a role made again under the
    same name is not handed back to its former holders."""
    assert (await admin.put_role("editor", "notes:write")).status_code == 201
    assert (await admin.put_role("viewer", "notes:read")).status_code == 201
    ada, ada_access, ada_refresh = await signed_up(api, "ada@example.com")
    grace, grace_access, grace_refresh = await signed_up(api, "grace@example.com")
    for user_id, role in ((ada, "editor"), (ada, "viewer"), (grace, "editor")):
        assert (await admin.grant(user_id, role)).status_code == 204
    ada_access, ada_refresh = await refreshed(api, ada_refresh)
    assert grants_in(ada_access) == (["editor", "viewer"], "notes:read notes:write")
    grace_access, grace_refresh = await refreshed(api, grace_refresh)
    assert grants_in(grace_access) == (["editor"], "notes:write")

    assert (await admin.delete_role("editor")).status_code == 204
    assert await held(api, ada_access) == (["viewer"], "notes:read")
    assert await held(api, grace_access) == ([], "")
    ada_access, ada_refresh = await refreshed(api, ada_refresh)
    assert grants_in(ada_access) == (["viewer"], "notes:read")
    grace_access, grace_refresh = await refreshed(api, grace_refresh)
    assert grants_in(grace_access) == (None, None)
    listed = await admin.http.get("/admin/roles", auth=admin.auth)
    assert [role["name"] for role in listed.json()["roles"]] == ["viewer"]
    assert (await admin.delete_role("editor")).status_code == 404

    assert (await admin.put_role("editor", "notes:write")).status_code == 201
    assert await held(api, grace_access) == ([], "")
    assert grants_in((await refreshed(api, grace_refresh))[0]) == (None, None)


async def test_deleting_a_role_with_end_sessions_ends_its_holders_sessions_only(
    api: Api, admin: AdminApi, app: Any, clock: FakeClock
) -> None:
    """DELETE /admin/roles/{name}?end_sessions=true: the holders' sessions end (resource
    servers refuse their tokens within the bound, refresh is refused); others' go on."""
    assert (await admin.put_role("admin", "notes:purge")).status_code == 201
    holder, _, holder_refresh = await signed_up(api, "ada@example.com")
    _, other_access, other_refresh = await signed_up(api, "grace@example.com")
    assert (await admin.grant(holder, "admin")).status_code == 204
    holder_access, holder_refresh = await refreshed(api, holder_refresh)
    async with resource_server(app, clock) as verifier:
        assert (await verifier.averify(holder_access)).has_roles("admin")
        assert (await admin.delete_role("admin", end_sessions=True)).status_code == 204
        await refused_within(verifier, holder_access, clock)
        await verifier.averify(other_access)
    assert (await api.refresh(holder_refresh)).status_code == 401
    assert (await api.refresh(other_refresh)).status_code == 200


# -- default roles --------------------------------------------------------------------------


@pytest.fixture
def default_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOKENWARD_DEFAULT_ROLES as an operator writes it (requested before `api`)."""
    monkeypatch.setenv("TOKENWARD_DEFAULT_ROLES", "member, ghost")


async def test_default_roles_that_exist_are_granted_at_registration(
    default_roles: None, api: Api, service: Any
) -> None:
    """TOKENWARD_DEFAULT_ROLES=member,ghost: a new user holds `member` from the start (the
    registration answer, /auth/me, the first token); `ghost` does not exist, so it is not
    granted and registration works as ever. Roles are granted at registration only: a default
    role created later reaches users registered after it, not those before."""
    early = await api.register("early@example.com")
    assert early.status_code == 201
    assert (early.json()["roles"], early.json()["scope"]) == ([], "")
    await service.roles.put("member", ["notes:read", "profile:edit"], OPERATOR)

    registered = await api.register("ada@example.com")
    assert registered.status_code == 201, registered.text
    assert (registered.json()["roles"], registered.json()["scope"]) == (
        ["member"],
        "notes:read profile:edit",
    )
    login = await api.login("ada@example.com")
    access = login.json()["access_token"]
    assert grants_in(access) == (["member"], "notes:read profile:edit")
    assert await held(api, access) == (["member"], "notes:read profile:edit")

    await service.roles.put("ghost", ["notes:haunt"], OPERATOR)
    assert await held(api, access) == (["member"], "notes:read profile:edit")
    late_access, _ = await api.signed_up("late@example.com")
    assert grants_in(late_access) == (["ghost", "member"], "notes:haunt notes:read profile:edit")
    early_login = await api.login("early@example.com")
    assert grants_in(early_login.json()["access_token"]) == (None, None)


async def test_default_roles_that_together_would_not_fit_in_a_token_are_refused(
    default_roles: None, api: Api, service: Any
) -> None:
    """Every new user gets all the default roles at once, so a default role's permissions are
    checked with the others': past what a token holds, 422 invalid-role and the role is left
    as it was (registration never meets a user it could not sign in)."""
    half = [f"p{i:02d}:" + "x" * 96 for i in range(12)]
    await service.roles.put("member", half, OPERATOR)
    with pytest.raises(InvalidRoleError):
        await service.roles.put("ghost", [p.replace("p", "g", 1) for p in half], OPERATOR)
    assert [role.name for role in await service.roles.list()] == ["member"]
    access, _ = await api.signed_up("ada@example.com")
    assert grants_in(access)[0] == ["member"]


async def test_granting_a_held_role_with_end_sessions_still_ends_the_sessions(
    api: Api, admin: AdminApi, app: Any, clock: FakeClock
) -> None:
    """An operator who asks for the sessions to end gets that, even when the user held the
    role already (a retry of a grant whose answer was lost, say)."""
    assert (await admin.put_role("admin", "notes:purge")).status_code == 201
    user_id, _, refresh = await signed_up(api, "ada@example.com")
    assert (await admin.grant(user_id, "admin")).status_code == 204
    access, refresh = await refreshed(api, refresh)
    assert (await admin.grant(user_id, "admin", end_sessions=True)).status_code == 204
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.me(access)).status_code == 401


# -- the operator's CLI ---------------------------------------------------------------------


async def test_the_cli_creates_grants_and_revokes_a_role_for_the_next_refresh(
    api: Api, data_dir: Path
) -> None:
    """`tokenward roles create`, `users grant`, `users revoke` (another process, the same
    database): the running server's /auth/me shows each change at once, the next refresh's
    token carries it."""
    out = ok(await acli(data_dir, "roles", "create", "editor", "-p", "notes:read", "-p", "n:w"))
    assert out.strip() == "created role editor: n:w notes:read"
    _, access, refresh = await signed_up(api, "ada@example.com")
    access, refresh = await refreshed(api, refresh)

    out = ok(await acli(data_dir, "users", "grant", "Ada@Example.com", "editor"))
    assert out.lower().strip() == "granted editor to ada@example.com"  # as typed
    assert await held(api, access) == (["editor"], "n:w notes:read")
    access, refresh = await refreshed(api, refresh)
    assert grants_in(access) == (["editor"], "n:w notes:read")

    out = ok(await acli(data_dir, "users", "revoke", "ada@example.com", "editor"))
    assert out.strip() == "revoked editor from ada@example.com"
    assert await held(api, access) == ([], "")
    access, _ = await refreshed(api, refresh)
    assert grants_in(access) == (None, None)


async def test_cli_revoke_with_end_sessions_refuses_the_old_token_within_the_bound(
    api: Api, service: Any, app: Any, data_dir: Path, clock: FakeClock
) -> None:
    """`tokenward users revoke EMAIL ROLE --end-sessions`: a resource server following the
    feed refuses the old token (still carrying the role) within its bound, counted from when
    the command returned; the refresh token and /auth/me refuse it at once."""
    await service.roles.put("admin", ["notes:purge"], OPERATOR)
    user_id, _, refresh = await signed_up(api, "ada@example.com")
    assert await service.roles.grant(user_id, "admin", OPERATOR) is True
    access, refresh = await refreshed(api, refresh)
    assert grants_in(access) == (["admin"], "notes:purge")
    async with resource_server(app, clock) as verifier:
        assert (await verifier.averify(access)).has_roles("admin")
        ok(await acli(data_dir, "users", "revoke", "ada@example.com", "admin", "--end-sessions"))
        clock.now = max(clock.now, datetime.now(UTC))  # the CLI wrote on the real clock
        await refused_within(verifier, access, clock)
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.me(access)).status_code == 401
    assert (await service.roles.grants(user_id)).roles == ()
