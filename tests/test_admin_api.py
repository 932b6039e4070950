"""The admin API's contract (``/admin/*``, docs/admin.md), over HTTP against the app in-process.

What a back office relies on: each scope opens exactly its operations; nothing but client
credentials opens any; paging neither repeats nor drops a user while users are created; every
operation does what it says, answers problem+json when it cannot, and is an audit event naming
the client; the client's request rate is capped; nothing is cached. Mail goes to a real SMTP
server on loopback (tests/support/smtp.py) and is read as its recipient reads it.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from support import PASSWORD, Api, FakeClock, counts, refresh_cookie, without_request_id
from support.admin import (
    ALL_SCOPES,
    AdminCaller,
    admin_client,
    basic,
    events_of,
    is_problem,
    leaked,
)
from support.smtp import SmtpServer, mail_settings_for

from tokenward.app.resource_servers import ClientService
from tokenward.core.scopes import AdminScope

APP_URL = "https://app.example"
NEW_PASSWORD = "the invited user's own passphrase 5"
READ, USERS, ROLES, SESSIONS = (
    AdminScope.USERS_READ,
    AdminScope.USERS,
    AdminScope.ROLES,
    AdminScope.SESSIONS,
)

# -- settings ---------------------------------------------------------------------------------

MAIL = {"mail": True}
"""``extra_settings`` for a test that needs mail delivered to the ``smtp`` fixture."""


@pytest.fixture
def extra_settings() -> dict[str, Any]:
    """A test's own settings (parametrize it); ``MAIL`` turns mail on."""
    return {}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, extra_settings: dict[str, Any]) -> Any:
    wanted = dict(extra_settings)
    if wanted.pop("mail", False):
        smtp: SmtpServer = request.getfixturevalue("smtp")
        return mail_settings_for(smtp, app_url=APP_URL, **wanted)
    return wanted


@pytest.fixture
async def root(service: Any, api: Api) -> AdminCaller:
    """A back office holding every admin scope: sets the scene for the others."""
    return await admin_client(service, api.http, *ALL_SCOPES, name="root")


# -- helpers ----------------------------------------------------------------------------------

_numbers = itertools.count()


def fresh_email(prefix: str = "user") -> str:
    return f"{prefix}{next(_numbers)}@example.com"


async def new_user(
    caller: AdminCaller, email: str | None = None, password: str | None = PASSWORD, **more: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"email": email or fresh_email(), **more}
    if password is not None:
        body["password"] = password
    response = await caller.post("/admin/users", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def put_role(caller: AdminCaller, name: str, *permissions: str) -> httpx.Response:
    return await caller.put(f"/admin/roles/{name}", json={"permissions": list(permissions)})


async def login(api: Api, email: str, password: str = PASSWORD) -> tuple[str, str]:
    response = await api.login(email, password)
    assert response.status_code == 200, response.text
    return response.json()["access_token"], refresh_cookie(response)


def sid(access: str) -> str:
    return str(jwt.decode(access, options={"verify_signature": False})["sid"])


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def latest_event_id(service: Any) -> int:
    found = await events_of(service, limit=1)
    return found[0].id if found else 0


async def scene(service: Any) -> tuple[Any, ...]:
    """What a refused request must leave as it was: row counts, the newest event (every
    change is one), every user as the admin API reads it, and the roles."""
    page = await service.user_admin.page(limit=200)
    users = [(u.account, u.grants) for u in page.users]
    return (
        await counts(service),
        await latest_event_id(service),
        users,
        await service.roles.list(),
    )


def created_at(user: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(user["created_at"])


# -- the route table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: AdminScope
    ok: int
    """The status of a successful call on fresh targets."""

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = (
    Route("GET", "/admin/users", READ, 200),
    Route("POST", "/admin/users", USERS, 201),
    Route("GET", "/admin/users/{user_id}", READ, 200),
    Route("DELETE", "/admin/users/{user_id}", USERS, 204),
    Route("POST", "/admin/users/{user_id}/disable", USERS, 200),
    Route("POST", "/admin/users/{user_id}/enable", USERS, 204),
    Route("PUT", "/admin/users/{user_id}/app_metadata", USERS, 200),
    Route("GET", "/admin/users/{user_id}/events", READ, 200),
    Route("DELETE", "/admin/users/{user_id}/factors", USERS, 200),
    Route("PUT", "/admin/users/{user_id}/roles/{role}", ROLES, 204),
    Route("DELETE", "/admin/users/{user_id}/roles/{role}", ROLES, 204),
    Route("GET", "/admin/roles", ROLES, 200),
    Route("PUT", "/admin/roles/{role}", ROLES, 201),
    Route("DELETE", "/admin/roles/{role}", ROLES, 204),
    Route("GET", "/admin/users/{user_id}/sessions", SESSIONS, 200),
    Route("DELETE", "/admin/users/{user_id}/sessions", SESSIONS, 200),
    Route("DELETE", "/admin/users/{user_id}/sessions/{session_id}", SESSIONS, 204),
)

# What a client holding one scope may do: written out, not computed by the server's allows().
OPENS = {
    READ: {READ},
    USERS: {USERS, READ},
    ROLES: {ROLES},
    SESSIONS: {SESSIONS},
}


async def prepare(route: Route, root: AdminCaller, api: Api) -> tuple[str, dict[str, Any]]:
    """A request for ``route`` on targets of its own (a user, a role, a live session) that a
    successful call succeeds on: (path, httpx keyword arguments)."""
    user = await new_user(root)
    role = f"role-{next(_numbers)}"
    values = {"user_id": user["id"], "role": role, "session_id": ""}
    if "{role}" in route.path and str(route) != "PUT /admin/roles/{role}":
        assert (await put_role(root, role, "posts:read")).status_code == 201
    if str(route) == "DELETE /admin/users/{user_id}/roles/{role}":
        granted = await root.put(f"/admin/users/{user['id']}/roles/{role}")
        assert granted.status_code == 204, granted.text
    if "sessions" in route.path:
        access, _ = await login(api, user["email"])
        values["session_id"] = sid(access)
    kwargs: dict[str, Any] = {}
    if str(route) == "POST /admin/users":
        kwargs["json"] = {"email": fresh_email("made"), "password": PASSWORD}
    elif route.path.endswith("/app_metadata"):
        kwargs["json"] = {"plan": "pro"}
    elif route.path == "/admin/roles/{role}" and route.method == "PUT":
        kwargs["json"] = {"permissions": ["posts:write"]}
    return route.path.format(**values), kwargs


# -- scopes -----------------------------------------------------------------------------------


async def test_the_route_table_is_every_admin_route(app: Any) -> None:
    """The scope tests below cover every /admin operation the app serves (as its OpenAPI
    document lists them): a new route cannot ship without a line here, and so without its
    scope checked."""
    paths = app.openapi()["paths"]
    served = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/admin")
        for method in operations
    }
    assert served == {(route.method, route.path) for route in ROUTES}


@pytest.mark.parametrize("scope", list(AdminScope), ids=str)
async def test_each_scope_allows_only_its_operations(
    api: Api, service: Any, root: AdminCaller, scope: AdminScope
) -> None:
    """A client holding one scope can call exactly the operations of that scope
    (``admin:users`` also reads); every other call is 403 insufficient-scope naming the scope
    it needs, and changes nothing."""
    caller = await admin_client(service, api.http, scope.value, name=f"only-{scope}")
    for route in ROUTES:
        path, kwargs = await prepare(route, root, api)
        before = await scene(service)
        response = await caller.request(route.method, path, **kwargs)
        if route.scope in OPENS[scope]:
            assert response.status_code == route.ok, (str(route), response.text)
            assert response.headers["cache-control"] == "no-store", str(route)
        else:
            body = is_problem(response, 403, "insufficient-scope")
            assert body["scope"] == route.scope.value, str(route)
            assert await scene(service) == before, f"{route} changed something on a 403"


async def test_users_scope_implies_read_but_read_implies_nothing(
    api: Api, service: Any, root: AdminCaller
) -> None:
    """``admin:users`` reads users too; ``admin:users:read`` cannot create one."""
    user = await new_user(root)
    writer = await admin_client(service, api.http, "admin:users")
    reader = await admin_client(service, api.http, "admin:users:read")
    assert (await writer.get(f"/admin/users/{user['id']}")).status_code == 200
    assert (await writer.get("/admin/users")).status_code == 200
    assert (await writer.get(f"/admin/users/{user['id']}/events")).status_code == 200
    refused = await reader.post("/admin/users", json={"email": fresh_email()})
    assert is_problem(refused, 403, "insufficient-scope")["scope"] == "admin:users"


async def test_creating_a_user_with_roles_needs_the_roles_scope_too(
    api: Api, service: Any, root: AdminCaller
) -> None:
    """Granting roles at creation is granting roles: ``admin:users`` alone is refused (and no
    user is made); with ``admin:roles`` too, the user holds them from the start."""
    assert (await put_role(root, "editor", "posts:write")).status_code == 201
    users_only = await admin_client(service, api.http, "admin:users")
    both = await admin_client(service, api.http, "admin:users", "admin:roles")
    before = await counts(service)
    refused = await users_only.post(
        "/admin/users", json={"email": "ed@example.com", "password": PASSWORD, "roles": ["editor"]}
    )
    assert is_problem(refused, 403, "insufficient-scope")["scope"] == "admin:roles"
    assert await counts(service) == before
    made = await new_user(both, "ed@example.com", roles=["editor"])
    assert made["roles"] == ["editor"]
    assert made["scope"] == "posts:write"
    # Without roles, admin:users alone suffices.
    assert (await new_user(users_only))["roles"] == []


# -- authentication ---------------------------------------------------------------------------


def invalid_client(response: httpx.Response) -> None:
    is_problem(response, 401, "invalid-client")
    assert response.headers["www-authenticate"] == 'Basic realm="tokenward"'


async def test_a_users_access_token_opens_no_admin_route(
    api: Api, service: Any, root: AdminCaller
) -> None:
    """A user's Bearer token is not client credentials, whatever roles the user holds: 401
    invalid-client with a Basic challenge on every /admin route."""
    assert (await put_role(root, "admin", "admin:users", "admin:roles")).status_code == 201
    user = await new_user(root, "ops@example.com", roles=["admin"])
    access, _ = await login(api, user["email"])
    for route in ROUTES:
        path = route.path.format(user_id=user["id"], role="admin", session_id=sid(access))
        invalid_client(await api.http.request(route.method, path, headers=bearer(access)))
    assert (await root.get(f"/admin/users/{user['id']}")).json()["disabled"] is False


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + _b64(b"no-colon-at-all"),
        "Basic " + _b64(b"\xff\xfe:\xff"),
        "Basic " + "A" * 2000,
        "Digest username=x",
        "Bearer twc_x",
    ],
    ids=lambda value: repr(value)[:30],
)
async def test_malformed_or_missing_credentials_are_401(
    api: Api, service: Any, authorization: str | None
) -> None:
    """Anything but well-formed Basic credentials is 401 invalid-client with the challenge,
    and does nothing."""
    headers = {} if authorization is None else {"Authorization": authorization}
    before = await scene(service)
    invalid_client(
        await api.http.post("/admin/users", json={"email": fresh_email()}, headers=headers)
    )
    assert await scene(service) == before


async def test_wrong_secret_unknown_or_deleted_client_are_401(
    api: Api, service: Any, root: AdminCaller
) -> None:
    """A wrong secret, an unknown client id, an empty secret and a deleted client's
    credentials are all 401 invalid-client, alike."""
    clients = ClientService(service)
    gone, gone_secret = await clients.create("gone", ["admin:users"])
    assert await clients.delete(gone.id)
    attempts = [
        basic(root.client_id, root.secret + "x"),
        basic(root.client_id, root.secret[:-1]),
        basic(root.client_id, ""),
        basic("twc_nobody", root.secret),
        basic("", root.secret),
        basic(gone.id, gone_secret),
        basic(root.client_id.upper(), root.secret),
    ]
    answers = [await api.http.get("/admin/users", headers=headers) for headers in attempts]
    for answer in answers:
        invalid_client(answer)
        assert without_request_id(answer) == without_request_id(answers[0])
    assert (await root.get("/admin/users")).status_code == 200


async def test_a_resource_server_without_admin_scopes_is_403_everywhere(
    api: Api, service: Any, root: AdminCaller
) -> None:
    """A client made for introspection and the revocation feed (no scope) is authenticated but
    may do nothing here: 403 insufficient-scope naming the scope each route needs."""
    resource_server = await admin_client(service, api.http, name="orders-api")
    user = await new_user(root)
    for route in ROUTES:
        path = route.path.format(user_id=user["id"], role="editor", session_id="s")
        body = {"permissions": []} if route.method == "PUT" else None
        response = await resource_server.request(route.method, path, json=body)
        assert is_problem(response, 403, "insufficient-scope")["scope"] == route.scope.value
    # ... while its own endpoints still accept it.
    feed = await api.http.get("/auth/revocations", headers=resource_server.headers)
    assert feed.status_code == 200


# -- paging -----------------------------------------------------------------------------------


async def walk(
    caller: AdminCaller, limit: int, *, between: Any = None, **params: Any
) -> list[dict[str, Any]]:
    """Every page in turn; ``between(page)`` runs after each page is fetched."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = await caller.get("/admin/users", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["users"]) <= limit
        seen += page["users"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert page["users"], "an empty page with a next cursor"
        if between is not None:
            await between(page)
    raise AssertionError("paging did not end")


def in_order(users: list[dict[str, Any]]) -> bool:
    keys = [(created_at(user), user["id"]) for user in users]
    return all(a < b for a, b in itertools.pairwise(keys))


async def test_paging_sees_each_user_once_while_users_are_created(
    root: AdminCaller, clock: FakeClock
) -> None:
    """Walking the pages while users are being created lists every user that existed at the
    start exactly once and never any user twice, in (created_at, id) order, even where many
    users share one creation time, a page ends inside such a group, and new users land in
    the middle of the list (another instance's clock) or at its end. A new user is listed
    exactly when it sorts after the position already reached."""
    start = clock.now
    initial: list[dict[str, Any]] = []
    for _group in range(6):  # six instants, three users each: ties everywhere
        for _ in range(3):
            initial.append(await new_user(root, password=None))
        clock.advance(1)
    assert len({u["created_at"] for u in initial}) == 6
    after_start = clock.now
    inserted: list[tuple[dict[str, Any], tuple[datetime, str]]] = []

    async def create_meanwhile(page: dict[str, Any]) -> None:
        boundary = page["users"][-1]
        reached = (created_at(boundary), boundary["id"])
        # The page's last instant (a tie at the boundary), the first instant, after all the
        # initial users, and well in the future.
        for moment in (reached[0], start, after_start, after_start + timedelta(seconds=30)):
            clock.now = moment
            inserted.append((await new_user(root, password=None), reached))
        clock.now = after_start

    seen = await walk(root, 4, between=create_meanwhile)
    ids = [user["id"] for user in seen]
    assert len(ids) == len(set(ids)), "a user was listed twice"
    assert {u["id"] for u in initial} <= set(ids), "a user that existed was skipped"
    assert in_order(seen)
    assert len(inserted) >= 4 * 4
    later = {user["id"] for user, reached in inserted if (created_at(user), user["id"]) > reached}
    assert set(ids) == {u["id"] for u in initial} | later
    # Afterwards a walk lists everyone, once, in order.
    everyone = await walk(root, 5)
    made = {u["id"] for u in initial} | {user["id"] for user, _ in inserted}
    assert {u["id"] for u in everyone} == made
    assert len(everyone) == len(made)
    assert in_order(everyone)
    # One page of all of them is the same list.
    single = (await root.get("/admin/users", params={"limit": 200})).json()
    assert single["next_cursor"] is None
    assert [u["id"] for u in single["users"]] == [u["id"] for u in everyone]


async def test_the_last_page_has_no_cursor_and_an_empty_store_one_empty_page(
    root: AdminCaller,
) -> None:
    """No users: one empty page. Exactly ``limit`` users: the page says it is the last."""
    empty = (await root.get("/admin/users")).json()
    assert empty == {"users": [], "next_cursor": None}
    for _ in range(3):
        await new_user(root, password=None)
    page = (await root.get("/admin/users", params={"limit": 3})).json()
    assert len(page["users"]) == 3
    assert page["next_cursor"] is None
    first = (await root.get("/admin/users", params={"limit": 2})).json()
    rest = await root.get("/admin/users", params={"limit": 2, "cursor": first["next_cursor"]})
    assert len(rest.json()["users"]) == 1
    assert rest.json()["next_cursor"] is None


async def test_email_prefix_filters_literally_and_case_insensitively(root: AdminCaller) -> None:
    """``email_prefix`` keeps the users whose address starts with it, whatever its case; ``%``
    and ``_`` in it are characters, not wildcards; paging works within the filter."""
    for local in ("a_b", "axb", "a%c", "abc", "ab", "ba_b", "zed"):
        await new_user(root, f"{local}@example.com", password=None)
    for index in range(5):
        await new_user(root, f"team.{index}@corp.example", password=None)

    async def emails(prefix: str, limit: int = 50) -> list[str]:
        return [u["email"] for u in await walk(root, limit, email_prefix=prefix)]

    assert await emails("a_") == ["a_b@example.com"]
    assert await emails("a%") == ["a%c@example.com"]
    assert sorted(await emails("ab")) == ["ab@example.com", "abc@example.com"]
    assert sorted(await emails("AB")) == ["ab@example.com", "abc@example.com"]
    assert await emails("%") == []
    assert await emails("_") == []
    assert await emails("nobody") == []
    team = await emails("team.", limit=2)  # one creation instant: in id order
    assert sorted(team) == [f"team.{i}@corp.example" for i in range(5)]
    assert len(await emails("")) == 12


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        base64.urlsafe_b64encode(b"2025-01-01T00:00:00+00:00").decode(),
        base64.urlsafe_b64encode(b"2025-01-01T00:00:00|not-a-uuid").decode(),
        base64.urlsafe_b64encode(b"2025-01-01T00:00:00|0b9a3c3e-8a8f-4b5e-9a68-3f1d1b2c4d5e")
        .decode()
        .rstrip("="),  # a naive time: not one of ours
        base64.urlsafe_b64encode(b"yesterday|0b9a3c3e-8a8f-4b5e-9a68-3f1d1b2c4d5e").decode(),
        base64.urlsafe_b64encode(b"a|b|c").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
async def test_an_invalid_cursor_is_400(root: AdminCaller, cursor: str) -> None:
    """A cursor this server did not hand out is 400 invalid-cursor, never a 500 or a page."""
    await new_user(root, password=None)
    is_problem(await root.get("/admin/users", params={"cursor": cursor}), 400, "invalid-cursor")


async def test_a_cursor_stays_valid_after_its_user_is_deleted(
    root: AdminCaller, clock: FakeClock
) -> None:
    """The cursor names a position, not a user: deleting the page's last user does not break
    the walk or skip anyone after it."""
    users = []
    for _ in range(4):
        users.append(await new_user(root, password=None))
        clock.advance(1)
    first = (await root.get("/admin/users", params={"limit": 2})).json()
    assert (await root.delete(f"/admin/users/{first['users'][-1]['id']}")).status_code == 204
    rest = await root.get("/admin/users", params={"limit": 5, "cursor": first["next_cursor"]})
    assert [u["id"] for u in rest.json()["users"]] == [u["id"] for u in users[2:]]


# -- creating users ---------------------------------------------------------------------------


async def test_a_user_created_with_a_password_can_log_in(api: Api, root: AdminCaller) -> None:
    """201 with the user as the admin API shows it; the password logs in at once."""
    response = await root.post(
        "/admin/users",
        json={
            "email": " Ada@Example.COM ",
            "password": PASSWORD,
            "email_verified": True,
            "app_metadata": {"plan": "pro", "seats": 3},
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    user = response.json()
    assert set(user) == {
        "id",
        "email",
        "created_at",
        "email_verified",
        "disabled",
        "roles",
        "scope",
        "app_metadata",
        "user_metadata",
    }
    assert user["email"] == "ada@example.com"
    assert user["email_verified"] is True
    assert user["disabled"] is False
    assert user["app_metadata"] == {"plan": "pro", "seats": 3}
    assert (user["roles"], user["scope"], user["user_metadata"]) == ([], "", {})
    assert PASSWORD not in response.text
    access, _ = await login(api, "ada@example.com")
    me = (await api.me(access)).json()
    assert me["id"] == user["id"]
    assert me["app_metadata"] == {"plan": "pro", "seats": 3}
    assert (await root.get(f"/admin/users/{user['id']}")).json() == user


async def test_the_password_policy_applies_to_created_users(
    service: Any, root: AdminCaller
) -> None:
    """A weak password is 422 password-policy (and no user); the answer does not echo it."""
    before = await counts(service)
    response = await root.post("/admin/users", json={"email": fresh_email(), "password": "short"})
    is_problem(response, 422, "weak-password")
    assert '"short"' not in response.text
    assert await counts(service) == before


@pytest.mark.parametrize("extra_settings", [MAIL])
async def test_an_invited_user_chooses_a_password_through_the_mailed_link(
    api: Api, service: Any, root: AdminCaller, smtp: SmtpServer
) -> None:
    """Without a password and with mail on, the user is mailed an invitation link to the app;
    until it is used no password signs in (not even the stored marker); using it on the
    password-reset endpoint sets the password, proves the address, and the user logs in."""
    user = await new_user(root, "invited@example.com", password=None)
    assert user["email_verified"] is False
    (mail,) = await smtp.arrived(1, to="invited@example.com")
    assert mail.subject == "You are invited to an account"
    assert mail.link.startswith(f"{APP_URL}/reset-password#token=")
    assert "7 days" in mail.text
    for guess in (PASSWORD, NEW_PASSWORD, "!", "!" * 15, "*" * 15):
        refused = await api.login("invited@example.com", guess)
        assert refused.status_code in {401, 422}, (guess, refused.text)
        assert "set-cookie" not in refused.headers
    grant = await api.http.post(
        "/auth/token",
        data={"grant_type": "password", "username": "invited@example.com", "password": "!"},
    )
    assert grant.status_code == 400
    reset = await api.http.post(
        "/auth/password/reset", json={"token": mail.token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204, reset.text
    shown = (await root.get(f"/admin/users/{user['id']}")).json()
    assert shown["email_verified"] is True
    access, _ = await login(api, "invited@example.com", NEW_PASSWORD)
    assert (await api.me(access)).json()["email_verified"] is True
    # The link worked once.
    again = await api.http.post(
        "/auth/password/reset", json={"token": mail.token, "new_password": PASSWORD}
    )
    is_problem(again, 400, "link-invalid")
    kinds = [e.type for e in await service.sessions.recent_events(user["id"], limit=50)]
    assert "user.created" in kinds
    assert "user.invited" in kinds


@pytest.mark.parametrize("extra_settings", [MAIL])
async def test_send_invitation_false_mails_nothing(
    api: Api, service: Any, root: AdminCaller, smtp: SmtpServer
) -> None:
    """``send_invitation: false`` makes the account without mailing it: nobody can sign in
    until an operator or a reset sets a password."""
    user = await new_user(root, "quiet@example.com", password=None, send_invitation=False)
    await new_user(root, "loud@example.com", password=None)
    await smtp.arrived(1, to="loud@example.com")  # the outbox ran after both were queued
    assert [m for m in smtp.mails if "quiet@example.com" in m.recipients] == []
    kinds = [e.type for e in await service.sessions.recent_events(user["id"])]
    assert "user.invited" not in kinds
    assert (await api.login("quiet@example.com", PASSWORD)).status_code == 401


@pytest.mark.parametrize("extra_settings", [{"email_delivery": "none"}])
async def test_without_mail_a_passwordless_user_is_made_but_not_invited(
    api: Api, service: Any, root: AdminCaller
) -> None:
    """Mail off: the account exists, no invitation is recorded, and no password signs in."""
    user = await new_user(root, "later@example.com", password=None)
    events = await service.sessions.recent_events(user["id"])
    created = next(e for e in events if e.type == "user.created")
    assert created.detail["invited"] is False
    assert "user.invited" not in [e.type for e in events]
    for guess in (PASSWORD, "!"):
        assert (await api.login("later@example.com", guess)).status_code in {401, 422}


async def test_a_taken_email_is_409(service: Any, root: AdminCaller, api: Api) -> None:
    """An address that has an account (in any case, or registered by the user) is 409
    email-taken, and nothing changes."""
    await new_user(root, "ada@example.com")
    assert (await api.register("grace@example.com")).status_code == 201
    before = await scene(service)
    for email in ("ada@example.com", "ADA@Example.com", " grace@example.com"):
        response = await root.post("/admin/users", json={"email": email, "password": PASSWORD})
        is_problem(response, 409, "email-taken")
    assert await scene(service) == before


def metadata_of(size: int) -> dict[str, str]:
    """An app_metadata object whose compact JSON is ``size`` bytes."""
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    return {"k": "x" * (size - overhead)}


async def test_app_metadata_of_8_kib_is_kept(root: AdminCaller) -> None:
    """app_metadata up to the 8 KiB cap (compact JSON) is stored and shown whole."""
    user = await new_user(root)
    at_cap = metadata_of(8_192)
    replaced = await root.put(f"/admin/users/{user['id']}/app_metadata", json=at_cap)
    assert replaced.status_code == 200, replaced.text
    assert (await root.get(f"/admin/users/{user['id']}")).json()["app_metadata"] == at_cap


async def test_app_metadata_over_8_kib_is_refused_and_changes_nothing(
    service: Any, root: AdminCaller
) -> None:
    """app_metadata over the cap is refused on creation and on replacement (413 or 422,
    see the next test), as is one that is not an object or not valid Unicode; nothing
    changes."""
    user = await new_user(root, app_metadata={"plan": "free"})
    before = await scene(service)
    over = metadata_of(8_193)
    created = await root.post("/admin/users", json={"email": fresh_email(), "app_metadata": over})
    assert created.status_code in {413, 422}, created.text
    replaced = await root.put(f"/admin/users/{user['id']}/app_metadata", json=over)
    assert replaced.status_code in {413, 422}, replaced.text
    for body in ([1, 2], "text", None, 3):
        refused = await root.put(f"/admin/users/{user['id']}/app_metadata", json=body)
        assert refused.status_code == 422, (body, refused.text)
    assert await scene(service) == before


async def test_app_metadata_over_8_kib_is_422_invalid_metadata(root: AdminCaller) -> None:
    """docs/authorization.md: anything over the cap is 422 ``invalid-metadata``; the cap is
    on the metadata, so a new user's metadata may be as large as a replacement's."""
    user = await new_user(root)
    over = metadata_of(8_193)
    replaced = await root.put(f"/admin/users/{user['id']}/app_metadata", json=over)
    is_problem(replaced, 422, "invalid-metadata")
    created = await root.post("/admin/users", json={"email": fresh_email(), "app_metadata": over})
    is_problem(created, 422, "invalid-metadata")
    at_cap = await root.post(
        "/admin/users", json={"email": fresh_email(), "app_metadata": metadata_of(8_192)}
    )
    assert at_cap.status_code == 201, at_cap.text


async def test_app_metadata_that_is_not_unicode_is_422(service: Any, root: AdminCaller) -> None:
    """A lone surrogate (valid JSON escape, not Unicode) in app_metadata is 422
    invalid-metadata, never a 500, and changes nothing."""
    user = await new_user(root)
    before = await scene(service)
    raw = b'{"k": "\\ud800"}'
    for method, path, content in (
        ("PUT", f"/admin/users/{user['id']}/app_metadata", raw),
        ("POST", "/admin/users", b'{"email": "x@example.com", "app_metadata": ' + raw + b"}"),
    ):
        response = await root.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        is_problem(response, 422, "invalid-metadata")
    assert await scene(service) == before


async def test_creating_with_an_unknown_role_is_404_and_makes_nobody(
    service: Any, root: AdminCaller
) -> None:
    """Roles named at creation must exist: 404, and no account is left behind."""
    before = await counts(service)
    response = await root.post(
        "/admin/users", json={"email": fresh_email(), "password": PASSWORD, "roles": ["ghost"]}
    )
    is_problem(response, 404, "not-found")
    assert await counts(service) == before


# -- changing users ---------------------------------------------------------------------------


async def test_disable_ends_sessions_and_enable_lets_the_user_back(
    api: Api, root: AdminCaller
) -> None:
    """Disabling answers how many sessions it ended: their refresh tokens and access tokens
    stop working and the password no longer logs in. Enabling lets the user log in again."""
    user = await new_user(root, "ada@example.com")
    first_access, first = await login(api, "ada@example.com")
    _, second = await login(api, "ada@example.com")
    disabled = await root.post(f"/admin/users/{user['id']}/disable")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json() == {"sessions_ended": 2}
    for refresh in (first, second):
        assert (await api.refresh(refresh)).status_code == 401
    assert (await api.me(first_access)).status_code == 401
    assert (await api.login("ada@example.com")).status_code == 401
    assert (await root.get(f"/admin/users/{user['id']}")).json()["disabled"] is True
    again = await root.post(f"/admin/users/{user['id']}/disable")
    assert again.json() == {"sessions_ended": 0}

    enabled = await root.post(f"/admin/users/{user['id']}/enable")
    assert enabled.status_code == 204
    assert enabled.content == b""
    assert (await root.get(f"/admin/users/{user['id']}")).json()["disabled"] is False
    await login(api, "ada@example.com")
    assert (await api.refresh(first)).status_code == 401  # ended sessions stay ended


async def test_delete_removes_the_user(api: Api, root: AdminCaller) -> None:
    """Deleted: 204, then 404 to every read, the password no longer logs in, the refresh
    token is dead, and a second delete is 404."""
    user = await new_user(root, "ada@example.com")
    _, refresh = await login(api, "ada@example.com")
    deleted = await root.delete(f"/admin/users/{user['id']}")
    assert deleted.status_code == 204
    for path in ("", "/events", "/sessions"):
        is_problem(await root.get(f"/admin/users/{user['id']}{path}"), 404, "not-found")
    is_problem(await root.delete(f"/admin/users/{user['id']}"), 404, "not-found")
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.login("ada@example.com")).status_code == 401
    assert (await root.get("/admin/users")).json()["users"] == []
    # The address is free again.
    await new_user(root, "ada@example.com")


async def test_unknown_user_is_404_on_every_user_route(root: AdminCaller) -> None:
    """An id that names nobody is 404 not-found, for reads and writes alike."""
    await put_role(root, "editor")
    for route in ROUTES:
        if "{user_id}" not in route.path:
            continue
        path = route.path.format(user_id="no-such-user", role="editor", session_id="s")
        kwargs = {"json": {"plan": "x"}} if route.path.endswith("app_metadata") else {}
        is_problem(await root.request(route.method, path, **kwargs), 404, "not-found")


async def test_app_metadata_is_replaced_and_shows_in_get_and_me(
    api: Api, root: AdminCaller
) -> None:
    """PUT app_metadata replaces it whole (not a merge); GET /admin/users/{id} and the user's
    own /auth/me show the new value at once; the user cannot change it."""
    user = await new_user(root, "ada@example.com", app_metadata={"plan": "free", "old": 1})
    access, _ = await login(api, "ada@example.com")
    response = await root.put(
        f"/admin/users/{user['id']}/app_metadata", json={"plan": "pro", "tier": {"seats": 5}}
    )
    assert response.status_code == 200
    assert response.json()["app_metadata"] == {"plan": "pro", "tier": {"seats": 5}}
    assert (await root.get(f"/admin/users/{user['id']}")).json()["app_metadata"] == {
        "plan": "pro",
        "tier": {"seats": 5},
    }
    assert (await api.me(access)).json()["app_metadata"] == {"plan": "pro", "tier": {"seats": 5}}
    patched = await api.http.patch(
        "/auth/me", json={"app_metadata": {"plan": "enterprise"}}, headers=bearer(access)
    )
    assert patched.status_code == 422
    assert (await api.me(access)).json()["app_metadata"]["plan"] == "pro"
    cleared = await root.put(f"/admin/users/{user['id']}/app_metadata", json={})
    assert cleared.json()["app_metadata"] == {}


# -- roles ------------------------------------------------------------------------------------


async def test_role_put_creates_then_replaces_and_delete_removes(root: AdminCaller) -> None:
    """PUT /admin/roles/{name}: 201 on creation, 200 on replacing the permissions whole;
    GET lists it; DELETE is 204, then 404; a bad name is 422 invalid-role."""
    created = await put_role(root, "editor", "posts:write", "posts:read")
    assert created.status_code == 201
    assert created.json()["name"] == "editor"
    assert sorted(created.json()["permissions"]) == ["posts:read", "posts:write"]
    replaced = await put_role(root, "editor", "posts:read")
    assert replaced.status_code == 200
    assert replaced.json()["permissions"] == ["posts:read"]
    assert replaced.json()["created_at"] == created.json()["created_at"]
    listed = (await root.get("/admin/roles")).json()["roles"]
    assert [(r["name"], r["permissions"]) for r in listed] == [("editor", ["posts:read"])]
    assert (await root.delete("/admin/roles/editor")).status_code == 204
    is_problem(await root.delete("/admin/roles/editor"), 404, "not-found")
    assert (await root.get("/admin/roles")).json() == {"roles": []}
    for bad in ("Editor", "1st", "a b", "x" * 65):
        response = await put_role(root, bad)
        assert response.status_code == 422, (bad, response.text)
    is_problem(await put_role(root, "ok", "has space"), 422, "invalid-role")


async def test_grant_and_revoke_roles(api: Api, root: AdminCaller) -> None:
    """A granted role shows in GET and /auth/me at once (and its permissions in ``scope``);
    granting twice is harmless; revoking takes it away; revoking a role not held, an unknown
    role or for an unknown user is 404."""
    user = await new_user(root, "ada@example.com")
    access, _ = await login(api, "ada@example.com")
    await put_role(root, "editor", "posts:write")
    await put_role(root, "viewer", "posts:read")
    path = f"/admin/users/{user['id']}/roles"
    for _ in range(2):
        granted = await root.put(f"{path}/editor")
        assert granted.status_code == 204, granted.text
    shown = (await root.get(f"/admin/users/{user['id']}")).json()
    assert (shown["roles"], shown["scope"]) == (["editor"], "posts:write")
    me = (await api.me(access)).json()
    assert (me["roles"], me["scope"]) == (["editor"], "posts:write")

    is_problem(await root.put(f"{path}/ghost"), 404, "not-found")
    is_problem(await root.put("/admin/users/nobody/roles/editor"), 404, "not-found")
    is_problem(await root.delete(f"{path}/viewer"), 404, "not-found")  # not held
    is_problem(await root.delete(f"{path}/ghost"), 404, "not-found")
    is_problem(await root.delete("/admin/users/nobody/roles/editor"), 404, "not-found")
    is_problem(await root.put(f"{path}/Bad!"), 422, "invalid-role")

    assert (await root.delete(f"{path}/editor")).status_code == 204
    assert (await root.get(f"/admin/users/{user['id']}")).json()["roles"] == []
    assert (await api.me(access)).json()["roles"] == []
    is_problem(await root.delete(f"{path}/editor"), 404, "not-found")


async def test_grant_with_end_sessions_ends_them(api: Api, root: AdminCaller) -> None:
    """``end_sessions=true`` ends the user's sessions with the change, so no token with the
    old scope outlives it; without it, sessions carry on and the next refresh has the role."""
    user = await new_user(root, "ada@example.com")
    await put_role(root, "editor", "posts:write")
    await put_role(root, "billing", "invoices:read")
    _, refresh = await login(api, "ada@example.com")
    path = f"/admin/users/{user['id']}/roles"
    assert (await root.put(f"{path}/editor")).status_code == 204
    refreshed = await api.refresh(refresh)
    assert refreshed.status_code == 200
    claims = jwt.decode(refreshed.json()["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["editor"]
    refresh = refresh_cookie(refreshed)
    ended = await root.put(f"{path}/billing", params={"end_sessions": "true"})
    assert ended.status_code == 204
    assert (await api.refresh(refresh)).status_code == 401


async def test_deleting_a_role_takes_it_from_its_holders(api: Api, root: AdminCaller) -> None:
    """A deleted role is no longer held by anyone."""
    user = await new_user(root, "ada@example.com", roles=[])
    await put_role(root, "editor", "posts:write")
    await root.put(f"/admin/users/{user['id']}/roles/editor")
    assert (await root.delete("/admin/roles/editor")).status_code == 204
    assert (await root.get(f"/admin/users/{user['id']}")).json()["roles"] == []


# -- sessions and events ----------------------------------------------------------------------


async def test_sessions_list_revoke_one_and_all(api: Api, root: AdminCaller) -> None:
    """A user's live sessions are listed; one can be revoked (its refresh token dies, the
    others live); a session of another user is 404 on this user's path and survives; revoking
    all answers how many ended."""
    ada = await new_user(root, "ada@example.com")
    grace = await new_user(root, "grace@example.com")
    first_access, first = await login(api, "ada@example.com")
    second_access, second = await login(api, "ada@example.com")
    grace_access, grace_refresh = await login(api, "grace@example.com")
    listed = (await root.get(f"/admin/users/{ada['id']}/sessions")).json()["sessions"]
    assert {s["id"] for s in listed} == {sid(first_access), sid(second_access)}
    assert {"id", "created_at", "last_used_at", "expires_at", "device", "ip"} <= set(listed[0])
    assert listed[0]["ip"] == "203.0.113.7"

    one = await root.delete(f"/admin/users/{ada['id']}/sessions/{sid(first_access)}")
    assert one.status_code == 204
    assert (await api.refresh(first)).status_code == 401
    second_refreshed = await api.refresh(second)
    assert second_refreshed.status_code == 200
    is_problem(
        await root.delete(f"/admin/users/{ada['id']}/sessions/{sid(first_access)}"),
        404,
        "not-found",
    )
    is_problem(
        await root.delete(f"/admin/users/{ada['id']}/sessions/{sid(grace_access)}"),
        404,
        "not-found",
    )
    assert (await api.refresh(grace_refresh)).status_code == 200
    listed = (await root.get(f"/admin/users/{ada['id']}/sessions")).json()["sessions"]
    assert [s["id"] for s in listed] == [sid(second_access)]

    everything = await root.delete(f"/admin/users/{ada['id']}/sessions")
    assert everything.status_code == 200
    assert everything.json() == {"ended": 1}
    assert (await api.refresh(refresh_cookie(second_refreshed))).status_code == 401
    assert (await root.get(f"/admin/users/{ada['id']}/sessions")).json() == {"sessions": []}
    assert (await root.delete(f"/admin/users/{ada['id']}/sessions")).json() == {"ended": 0}
    listed = (await root.get(f"/admin/users/{grace['id']}/sessions")).json()["sessions"]
    assert [s["id"] for s in listed] == [sid(grace_access)]


async def test_user_events_show_the_users_history(api: Api, root: AdminCaller) -> None:
    """GET /admin/users/{id}/events: the user's events newest first, with ``limit``; admin
    changes name the client."""
    user = await new_user(root, "ada@example.com")
    await login(api, "ada@example.com")
    assert (await api.login("ada@example.com", "a wrong passphrase 12345")).status_code == 401
    await root.post(f"/admin/users/{user['id']}/disable")
    response = await root.get(f"/admin/users/{user['id']}/events")
    assert response.status_code == 200
    events = response.json()["events"]
    kinds = [e["type"] for e in events]
    assert kinds == ["user.disabled", "login.failed", "login.succeeded", "user.created"]
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert {"id", "at", "type", "session_id", "ip", "user_agent", "detail"} <= set(events[0])
    assert events[0]["detail"]["by"] == "admin_api"
    assert events[0]["detail"]["client_id"] == root.client_id
    limited = (await root.get(f"/admin/users/{user['id']}/events", params={"limit": 2})).json()
    assert [e["type"] for e in limited["events"]] == kinds[:2]
    too_many = await root.get(f"/admin/users/{user['id']}/events", params={"limit": 201})
    assert too_many.status_code == 422


# -- the audit trail --------------------------------------------------------------------------

ADMIN_CHANGES = {
    "user.created",
    "user.invited",
    "user.disabled",
    "user.enabled",
    "user.deleted",
    "user.app_metadata_changed",
    "role.created",
    "role.updated",
    "role.deleted",
    "role.granted",
    "role.revoked",
    "session.revoked",
}


@pytest.mark.parametrize("extra_settings", [MAIL])
async def test_every_admin_change_is_an_event_naming_the_client(
    api: Api, service: Any, smtp: SmtpServer
) -> None:
    """Each change made through the admin API is an event whose detail says ``by:
    admin_api`` and the client's id, from the caller's address; no event detail holds a
    password, a client secret or an address."""
    bot = await admin_client(service, api.http, *ALL_SCOPES, name="audit-bot")
    other = await admin_client(service, api.http, *ALL_SCOPES, name="other-bot")
    mark = await latest_event_id(service)
    await put_role(bot, "editor", "posts:write")
    await put_role(bot, "editor", "posts:read")
    await put_role(bot, "gone")
    ada = await new_user(bot, "ada@example.com", roles=["editor"], app_metadata={"k": 1})
    invited = await new_user(bot, "invited@example.com", password=None)
    (mail,) = await smtp.arrived(1, to="invited@example.com")
    await bot.put(f"/admin/users/{ada['id']}/roles/gone")
    await bot.delete(f"/admin/users/{ada['id']}/roles/gone")
    await bot.put(f"/admin/users/{ada['id']}/roles/gone")
    assert (await bot.delete("/admin/roles/gone", params={"end_sessions": "true"})).is_success
    await bot.put(f"/admin/users/{ada['id']}/app_metadata", json={"plan": "pro"})
    access, _ = await login(api, "ada@example.com")
    await login(api, "ada@example.com")
    await bot.delete(f"/admin/users/{ada['id']}/sessions/{sid(access)}")
    await bot.delete(f"/admin/users/{ada['id']}/sessions")
    await login(api, "ada@example.com")
    assert (await bot.post(f"/admin/users/{ada['id']}/disable")).json()["sessions_ended"] == 1
    await bot.post(f"/admin/users/{ada['id']}/enable")
    await bot.delete(f"/admin/users/{invited['id']}")

    events = [e for e in await events_of(service) if e.id > mark]
    admin = [e for e in events if e.type in ADMIN_CHANGES]
    assert {e.type for e in admin} == ADMIN_CHANGES
    for event in admin:
        assert event.detail["by"] == "admin_api", event
        assert event.detail["client_id"] == bot.client_id, event
        assert event.ip == "203.0.113.7", event
    assert other.client_id not in json.dumps([e.detail for e in events])
    session_revoked = [e for e in admin if e.type == "session.revoked"]
    assert len(session_revoked) == 2
    secrets = [
        PASSWORD,
        bot.secret,
        other.secret,
        mail.token,
        "ada@example.com",
        "invited@example.com",
    ]
    assert leaked(await events_of(service), secrets) == []


# -- rate limit and caching -------------------------------------------------------------------


@pytest.mark.parametrize("extra_settings", [{"rate_limit_admin_client": "3/minute"}])
async def test_a_client_over_its_rate_is_429(api: Api, service: Any) -> None:
    """Past ``rate_limit_admin_client`` a client's requests are 429 rate-limited with
    Retry-After, and do nothing; another client is counted apart."""
    busy = await admin_client(service, api.http, *ALL_SCOPES, name="busy")
    calm = await admin_client(service, api.http, *ALL_SCOPES, name="calm")
    for _ in range(3):
        assert (await busy.get("/admin/users")).status_code == 200
    before = await counts(service)
    limited = await busy.post("/admin/users", json={"email": fresh_email(), "password": PASSWORD})
    is_problem(limited, 429, "rate-limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert await counts(service) == before
    is_problem(await busy.get("/admin/roles"), 429, "rate-limited")
    assert (await calm.get("/admin/users")).status_code == 200


async def test_answers_are_never_cached(api: Api, service: Any, root: AdminCaller) -> None:
    """Users' data is never stored by a cache: /admin answers say ``no-store`` (every route's
    success is checked in the scope test too)."""
    user = await new_user(root)
    answers = [
        await root.get("/admin/users"),
        await root.get(f"/admin/users/{user['id']}"),
        await root.post(f"/admin/users/{user['id']}/enable"),
        await root.get("/admin/roles"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 204, 200]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", answer.request.url


async def test_refusals_are_never_cached(api: Api, service: Any, root: AdminCaller) -> None:
    """docs/admin.md: *every* answer is ``Cache-Control: no-store``, refusals included (a
    404 or a 409 tells which users exist)."""
    reader = await admin_client(service, api.http, "admin:users:read")
    user = await new_user(root)
    answers = [
        await root.get("/admin/users/nobody"),
        await root.get("/admin/users", params={"cursor": "garbage"}),
        await root.post("/admin/users", json={"email": user["email"]}),
        await reader.post("/admin/users", json={"email": fresh_email()}),
        await api.http.get("/admin/users"),
        await root.get("/admin/users", params={"limit": 0}),
    ]
    assert [a.status_code for a in answers] == [404, 400, 409, 403, 401, 422]
    for answer in answers:
        assert answer.headers.get("cache-control") == "no-store", answer.status_code
