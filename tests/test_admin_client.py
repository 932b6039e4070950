"""The async admin client (``tokenward.admin.AsyncAdminClient``) against a real tokenward app,
in-process: each method once end to end, paging over several pages, and the errors it raises.

The app is the ``app`` fixture (create_app with the test clock and hasher, its lifespan run),
reached through ``httpx.ASGITransport``: the same requests a back office sends over the
network. The sync client against a real ``tokenward serve`` is in test_admin_client_process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pyotp
import pytest
from support import PASSWORD, Api, FakeClock, refresh_cookie
from support.admin import ALL_SCOPES

from tokenward.admin import (
    AdminClient,
    AdminError,
    AdminEvent,
    AdminSession,
    AdminUser,
    AsyncAdminClient,
    Role,
    UserPage,
)
from tokenward.app.resource_servers import ClientService
from tokenward.exceptions import TokenwardError

BASE = "http://testserver"
WEAK = "tiny secret"


@dataclass
class Clients:
    """Admin clients on the app, and what they must never show."""

    make: Callable[..., Any]
    secrets: list[str]


@pytest.fixture
async def clients(app: Any, service: Any) -> AsyncIterator[Clients]:
    """``await clients.make(*scopes)``: an AsyncAdminClient holding ``scopes``, on the app;
    closed at the end."""
    made: list[AsyncAdminClient] = []
    secrets: list[str] = []

    async def make(*scopes: str, secret: str | None = None) -> AsyncAdminClient:
        client, real = await ClientService(service).create("backoffice", scopes)
        secrets.append(real)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 40000))
        admin = AsyncAdminClient(BASE, client.id, secret or real, transport=transport)
        made.append(admin)
        return admin

    yield Clients(make, secrets)
    for admin in made:
        await admin.aclose()


@pytest.fixture
async def admin(clients: Clients) -> AsyncAdminClient:
    return await clients.make(*ALL_SCOPES)


async def login(api: Api, email: str) -> tuple[str, str]:
    response = await api.login(email)
    assert response.status_code == 200, response.text
    return response.json()["access_token"], refresh_cookie(response)


def never_shows(secrets: list[str], *things: object) -> None:
    for thing in things:
        for text in (str(thing), repr(thing)):
            for secret in secrets:
                assert secret not in text, (secret, text)


# -- coverage of the client -------------------------------------------------------------------

EXERCISED = {
    "list_users",
    "iter_users",
    "create_user",
    "get_user",
    "delete_user",
    "disable_user",
    "enable_user",
    "set_app_metadata",
    "user_events",
    "put_role",
    "list_roles",
    "grant_role",
    "revoke_role",
    "delete_role",
    "list_sessions",
    "revoke_session",
    "revoke_sessions",
    "reset_factors",
}


@pytest.mark.parametrize("client_class", [AsyncAdminClient, AdminClient], ids=str)
def test_every_method_of_the_clients_is_exercised_here(client_class: type) -> None:
    """The tests below (and test_admin_client_process, for the sync client) call each admin
    method of the clients: a new method cannot ship untested against a real server."""
    public = {
        name
        for name, member in vars(client_class).items()
        if callable(member) and not name.startswith("_")
    }
    assert public - {"close", "aclose"} == EXERCISED


# -- users ------------------------------------------------------------------------------------


async def test_create_get_metadata_disable_enable_events_delete(
    admin: AsyncAdminClient, api: Api
) -> None:
    """A user's life through the client: each call's answer is the typed value the API
    promises, and the changes are real (the user logs in, is locked out, comes back)."""
    user = await admin.create_user(
        "Ada@Example.com", password=PASSWORD, email_verified=True, app_metadata={"plan": "free"}
    )
    assert isinstance(user, AdminUser)
    assert (user.email, user.email_verified, user.disabled) == ("ada@example.com", True, False)
    assert (user.roles, user.scope, user.app_metadata) == ((), (), {"plan": "free"})
    assert isinstance(user.created_at, datetime)
    assert user.created_at.tzinfo is not None
    assert await admin.get_user(user.id) == user

    changed = await admin.set_app_metadata(user.id, {"plan": "pro"})
    assert changed.app_metadata == {"plan": "pro"}
    assert (await admin.get_user(user.id)).app_metadata == {"plan": "pro"}

    _, refresh = await login(api, "ada@example.com")
    assert await admin.disable_user(user.id) == 1
    assert (await admin.get_user(user.id)).disabled is True
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.login("ada@example.com")).status_code == 401
    assert await admin.enable_user(user.id) is None
    await login(api, "ada@example.com")

    events = await admin.user_events(user.id, limit=10)
    assert all(isinstance(event, AdminEvent) for event in events)
    kinds = [event.type for event in events]
    assert kinds[:4] == ["login.succeeded", "user.enabled", "login.failed", "user.disabled"]
    assert "user.app_metadata_changed" in kinds
    assert kinds[-1] == "user.created"
    disabled = events[kinds.index("user.disabled")]
    assert disabled.detail == {
        "by": "admin_api",
        "client_id": admin.client_id,
        "sessions_ended": 1,
    }
    assert disabled.ip == "198.51.100.4"
    assert len(await admin.user_events(user.id, limit=2)) == 2

    assert await admin.delete_user(user.id) is None
    with pytest.raises(AdminError) as caught:
        await admin.get_user(user.id)
    assert (caught.value.status, caught.value.problem) == (404, "not-found")


async def test_a_user_without_a_password_cannot_log_in(admin: AsyncAdminClient, api: Api) -> None:
    """create_user without a password (and no invitation) makes an account nobody can sign
    in to yet."""
    user = await admin.create_user("later@example.com", send_invitation=False)
    assert user.email_verified is False
    assert (await api.login("later@example.com", PASSWORD)).status_code == 401


async def test_list_and_iter_users_walk_every_page(
    admin: AsyncAdminClient, clock: FakeClock
) -> None:
    """list_users hands out one page and its cursor; iter_users follows the cursors over
    several pages to the last, in creation order, filtered by email_prefix."""
    made = []
    for index in range(7):
        made.append(await admin.create_user(f"member{index}@example.com"))
        clock.advance(1)
    made.append(await admin.create_user("outsider@example.com"))

    first = await admin.list_users(limit=3)
    assert isinstance(first, UserPage)
    assert [u.id for u in first.users] == [u.id for u in made[:3]]
    assert first.next_cursor is not None
    second = await admin.list_users(limit=3, cursor=first.next_cursor)
    assert [u.id for u in second.users] == [u.id for u in made[3:6]]
    last = await admin.list_users(limit=10, cursor=second.next_cursor)
    assert [u.id for u in last.users] == [u.id for u in made[6:]]
    assert last.next_cursor is None

    walked = [user async for user in admin.iter_users(page_size=2)]
    assert [u.id for u in walked] == [u.id for u in made]
    members = [user async for user in admin.iter_users(email_prefix="MEMBER", page_size=2)]
    assert [u.email for u in members] == [f"member{i}@example.com" for i in range(7)]
    assert [user async for user in admin.iter_users(email_prefix="nobody")] == []
    only = await admin.list_users(email_prefix="outsider")
    assert [u.email for u in only.users] == ["outsider@example.com"]


# -- roles ------------------------------------------------------------------------------------


async def test_roles_put_list_grant_revoke_delete(admin: AsyncAdminClient, api: Api) -> None:
    """Roles through the client: put (create, replace), list, grant (also at creation),
    revoke, delete; the user's token scope follows."""
    created = await admin.put_role("editor", ["posts:write", "posts:read"])
    assert isinstance(created, Role)
    assert (created.name, sorted(created.permissions)) == ("editor", ["posts:read", "posts:write"])
    replaced = await admin.put_role("editor", ["posts:write"])
    assert replaced.permissions == ("posts:write",)
    await admin.put_role("billing", ["invoices:read"])
    assert [(r.name, r.permissions) for r in await admin.list_roles()] == [
        ("billing", ("invoices:read",)),
        ("editor", ("posts:write",)),
    ]

    ada = await admin.create_user("ada@example.com", password=PASSWORD, roles=["editor"])
    assert (ada.roles, ada.scope) == (("editor",), ("posts:write",))
    access, _ = await login(api, "ada@example.com")
    assert await admin.grant_role(ada.id, "billing") is None
    assert await admin.grant_role(ada.id, "billing") is None  # held already: no change
    held = await admin.get_user(ada.id)
    assert sorted(held.roles) == ["billing", "editor"]
    assert sorted(held.scope) == ["invoices:read", "posts:write"]
    assert sorted((await api.me(access)).json()["roles"]) == ["billing", "editor"]

    assert await admin.revoke_role(ada.id, "billing", end_sessions=True) is None
    assert (await admin.get_user(ada.id)).roles == ("editor",)
    assert (await api.me(access)).status_code == 401  # end_sessions: the session ended
    with pytest.raises(AdminError) as caught:
        await admin.revoke_role(ada.id, "billing")
    assert (caught.value.status, caught.value.problem) == (404, "not-found")

    assert await admin.delete_role("editor") is True
    assert await admin.delete_role("editor") is False
    assert (await admin.get_user(ada.id)).roles == ()
    assert [r.name for r in await admin.list_roles()] == ["billing"]


# -- sessions ---------------------------------------------------------------------------------


async def test_sessions_list_revoke_one_and_all(admin: AsyncAdminClient, api: Api) -> None:
    """list_sessions shows the user's live sessions; revoke_session ends one (True) and says
    False for one that is not there; revoke_sessions ends the rest and counts them."""
    ada = await admin.create_user("ada@example.com", password=PASSWORD)
    _, first = await login(api, "ada@example.com")
    _, second = await login(api, "ada@example.com")
    _, third = await login(api, "ada@example.com")
    sessions = await admin.list_sessions(ada.id)
    assert len(sessions) == 3
    assert all(isinstance(s, AdminSession) for s in sessions)
    assert {s.ip for s in sessions} == {"203.0.113.7"}
    oldest = min(sessions, key=lambda s: s.created_at)

    assert await admin.revoke_session(ada.id, oldest.id) is True
    assert await admin.revoke_session(ada.id, oldest.id) is False
    assert await admin.revoke_session(ada.id, "no-such-session") is False
    assert len(await admin.list_sessions(ada.id)) == 2
    alive = [(await api.refresh(token)).status_code for token in (first, second, third)]
    assert sorted(alive) == [200, 200, 401]

    assert await admin.revoke_sessions(ada.id) == 2
    assert await admin.list_sessions(ada.id) == []
    assert await admin.revoke_sessions(ada.id) == 0
    with pytest.raises(AdminError) as caught:
        await admin.list_sessions("no-such-user")
    assert caught.value.problem == "not-found"


async def test_reset_factors_lets_a_user_who_lost_their_phone_back_in(
    admin: AsyncAdminClient, api: Api, clock: Any
) -> None:
    """reset_factors removes every second factor (and the recovery codes): the next sign-in
    asks for the password alone; the event names the client."""
    ada = await admin.create_user("ada@example.com", password=PASSWORD)
    access, _ = await login(api, "ada@example.com")
    bearer = {"Authorization": f"Bearer {access}"}
    started = (await api.http.post("/auth/mfa/totp/enroll", headers=bearer)).json()
    code = pyotp.TOTP(started["secret"]).at(clock.time())
    confirmed = await api.http.post(
        "/auth/mfa/totp/confirm",
        json={"factor_id": started["factor_id"], "code": code},
        headers=bearer,
    )
    assert confirmed.status_code == 200
    assert (await api.login("ada@example.com")).json()["mfa_required"] is True

    assert await admin.reset_factors(ada.id) == 1
    assert "access_token" in (await api.login("ada@example.com")).json()
    assert await admin.reset_factors(ada.id) == 0
    removed = [e for e in await admin.user_events(ada.id) if e.type == "mfa.removed"]
    assert [e.detail["by"] for e in removed] == ["admin_api"]
    with pytest.raises(AdminError) as caught:
        await admin.reset_factors("no-such-user")
    assert caught.value.problem == "not-found"


# -- errors -----------------------------------------------------------------------------------


async def test_errors_carry_the_problem_and_never_the_secret(
    admin: AsyncAdminClient, clients: Clients
) -> None:
    """Refusals raise AdminError (a TokenwardError) with the server's status, problem code,
    title and extra members (the scope a 403 names); neither its message nor any repr shows
    the client secret or a password sent."""
    reader = await clients.make("admin:users:read")
    await admin.create_user("ada@example.com", password=PASSWORD)
    caught: list[AdminError] = []

    with pytest.raises(AdminError) as forbidden:
        await reader.create_user("grace@example.com", password=PASSWORD)
    error = forbidden.value
    assert isinstance(error, TokenwardError)
    assert (error.status, error.problem, error.title) == (
        403,
        "insufficient-scope",
        "Insufficient scope",
    )
    assert error.extra() == {"scope": "admin:users"}
    assert "POST /admin/users" in str(error)
    caught.append(error)

    with pytest.raises(AdminError) as taken:
        await admin.create_user("ADA@example.com", password=PASSWORD)
    assert (taken.value.status, taken.value.problem) == (409, "email-taken")
    caught.append(taken.value)

    with pytest.raises(AdminError) as missing:
        await admin.disable_user("no-such-user")
    assert (missing.value.status, missing.value.problem) == (404, "not-found")
    assert missing.value.retry_after is None
    caught.append(missing.value)

    with pytest.raises(AdminError) as weak:
        await admin.create_user("weak@example.com", password=WEAK)
    assert (weak.value.status, weak.value.problem) == (422, "weak-password")
    caught.append(weak.value)

    with pytest.raises(AdminError) as scoped:
        await reader.grant_role("no-such-user", "editor")
    assert scoped.value.extra()["scope"] == "admin:roles"
    caught.append(scoped.value)

    never_shows([*clients.secrets, PASSWORD, WEAK], admin, reader, *caught)
    for error in caught:
        never_shows([*clients.secrets, PASSWORD, WEAK], *error.args, error.extra())


async def test_wrong_credentials_are_invalid_client(clients: Clients) -> None:
    """A wrong secret is AdminError 401 invalid-client, whose message holds neither secret."""
    wrong = await clients.make(*ALL_SCOPES, secret="not-the-secret-at-all")
    with pytest.raises(AdminError) as caught:
        await wrong.list_users()
    assert (caught.value.status, caught.value.problem) == (401, "invalid-client")
    never_shows([*clients.secrets, "not-the-secret-at-all"], wrong, caught.value)


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_admin_client": "2/minute"}])
async def test_rate_limited_carries_retry_after(admin: AsyncAdminClient) -> None:
    """Over its rate, the client raises AdminError 429 rate-limited with ``retry_after``."""
    await admin.list_roles()
    await admin.list_roles()
    with pytest.raises(AdminError) as caught:
        await admin.list_roles()
    assert (caught.value.status, caught.value.problem) == (429, "rate-limited")
    assert caught.value.retry_after is not None
    assert 1 <= caught.value.retry_after <= 60
