"""The custom claims hook: what it adds to access tokens, what it is told, what it cannot do,
and how tokenward fails (503, nothing written) when it raises, hangs or answers nonsense."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from support import (
    COOKIE,
    FAST_HASHER,
    LIFESPAN_TIMEOUT,
    PASSWORD,
    PROBLEM,
    Api,
    FakeClock,
    counts,
    make_settings,
    refresh_cookie,
)
from support.hooks import ScriptedHook, claims_of, write_hook_module

from tokenward.app.service import Principal
from tokenward.core.claims import RESERVED_CLAIMS, ClaimsRequest, TokenGrant
from tokenward.core.events import OPERATOR
from tokenward.core.tokens import MAX_TOKEN_LENGTH
from tokenward.exceptions import ConfigError, InvalidRoleError
from tokenward.infra.config import Settings
from tokenward.web import create_app
from tokenward.web.embed import embedded_user, tokenward_lifespan

CLAIMS_UNAVAILABLE = "urn:tokenward:problem:claims-unavailable"
EMAIL = "ada@example.com"
SHORT_TIMEOUT = {"claims_hook_timeout": timedelta(milliseconds=300)}

both_kinds = pytest.mark.parametrize("hook", ["sync", "async"], indirect=True)


@pytest.fixture
def hook(request: pytest.FixtureRequest) -> Iterator[ScriptedHook]:
    """The app's claims hook (a plain function unless parametrized ``"async"``)."""
    scripted = ScriptedHook(getattr(request, "param", "sync"))
    yield scripted
    scripted.release()  # a plain function still hanging in its thread returns now


@pytest.fixture
async def app(settings: Settings, clock: FakeClock, hook: ScriptedHook) -> AsyncIterator[Any]:
    """The app of conftest, with ``hook`` passed in as an embedding application does."""
    application = create_app(settings, clock=clock, hasher=FAST_HASHER, claims_hook=hook.function)
    async with LifespanManager(
        application, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        yield application


@asynccontextmanager
async def started(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[Api, Any]]:
    """An app of its own (no hook passed in: the settings' TOKENWARD_CLAIMS_HOOK, if any)."""
    application = create_app(settings, clock=clock, hasher=FAST_HASHER)
    async with LifespanManager(
        application, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(http), application.state.service


async def user_id(service: Any, email: str = EMAIL) -> str:
    async with service.store.read() as tx:
        account = await tx.account_by_email(email)
    assert account is not None
    return str(account.id)


async def events(service: Any, kind: str) -> list[Any]:
    async with service.store.read() as tx:
        found = await tx.events(limit=1000)
    return [event for event in found if event.type == kind]


async def token_grant(api: Api, **form: str) -> httpx.Response:
    return await api.http.post("/auth/token", data=form)


def assert_claims_unavailable(response: httpx.Response) -> None:
    """503 problem+json with Retry-After, no token and no cookie (set or cleared)."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == CLAIMS_UNAVAILABLE
    assert int(response.headers["retry-after"]) > 0
    assert "access_token" not in response.text
    assert "refresh_token" not in response.text
    assert response.headers.get_list("set-cookie") == []


async def assert_hook_failed(
    service: Any, reason: str, grant: str, *, session_id: str | None = None
) -> None:
    """Exactly one claims.hook_failed event, for the user, saying why and at which grant only."""
    [event] = await events(service, "claims.hook_failed")
    assert event.user_id == await user_id(service)
    assert event.detail == {"reason": reason, "grant": grant}
    if session_id is not None:
        assert event.session_id == session_id


async def register(api: Api, email: str = EMAIL) -> None:
    assert (await api.register(email)).status_code == 201


async def grant_role(service: Any, name: str, permissions: list[str]) -> None:
    await service.roles.put(name, permissions, OPERATOR)
    await service.roles.grant(await user_id(service), name, OPERATOR)


# -- what the hook adds, and when ------------------------------------------------------------


@both_kinds
async def test_extra_claims_are_in_the_access_token_at_login(api: Api, hook: ScriptedHook) -> None:
    """A deployment's claims (strings, numbers, objects, lists) arrive in the login's token,
    which still verifies."""
    answer = {"tenant": "acme", "plan": {"tier": "pro", "seats": 5}, "flags": ["beta", 1, None]}
    hook.answers(answer)
    access, _ = await api.signed_up()
    claims = claims_of(access)
    assert {name: claims[name] for name in answer} == answer
    assert (await api.me(access)).status_code == 200


@both_kinds
async def test_extra_claims_are_computed_again_at_every_refresh(
    api: Api, hook: ScriptedHook
) -> None:
    """Each token asks the hook anew: the cookie refresh, the refresh_token grant and the
    password grant each carry that call's answer and say which grant it was."""
    hook.answer = lambda request: {"n": len(hook.requests), "grant_seen": request.grant.value}
    access, refresh = await api.signed_up()
    assert claims_of(access)["n"] == 1
    assert claims_of(access)["grant_seen"] == "login"

    rotated = await api.refresh(refresh)
    assert rotated.status_code == 200
    assert claims_of(rotated.json()["access_token"])["n"] == 2
    assert claims_of(rotated.json()["access_token"])["grant_seen"] == "refresh"

    granted = await token_grant(
        api, grant_type="refresh_token", refresh_token=refresh_cookie(rotated)
    )
    assert granted.status_code == 200
    assert claims_of(granted.json()["access_token"])["n"] == 3

    password = await token_grant(api, grant_type="password", username=EMAIL, password=PASSWORD)
    assert password.status_code == 200
    assert claims_of(password.json()["access_token"])["n"] == 4
    assert [r.grant for r in hook.requests] == [
        TokenGrant.LOGIN,
        TokenGrant.REFRESH,
        TokenGrant.REFRESH,
        TokenGrant.LOGIN,
    ]


async def test_the_hook_is_told_the_user_session_roles_grant_and_app_metadata(
    api: Api, service: Any, hook: ScriptedHook
) -> None:
    """What the hook decides on is what the user holds now: an operator's app_metadata or role
    change shows in the very next refresh's token."""
    hook.answer = lambda request: {
        "tenant": request.app_metadata.get("tenant"),
        "seen_roles": list(request.roles),
    }
    await register(api)
    uid = await user_id(service)
    await grant_role(service, "editor", ["posts:write"])
    await service.user_admin.set_app_metadata(uid, {"tenant": "acme"}, OPERATOR)

    login = await api.login(EMAIL)
    assert login.status_code == 200
    claims = claims_of(login.json()["access_token"])
    [request] = hook.requests
    assert isinstance(request, ClaimsRequest)
    assert request.user.id == uid == claims["sub"]
    assert request.user.email == EMAIL
    assert request.session_id == claims["sid"]
    assert request.roles == ("editor",)
    assert request.grants.permissions == ("posts:write",)
    assert request.grant is TokenGrant.LOGIN
    assert dict(request.app_metadata) == {"tenant": "acme"}
    assert (claims["tenant"], claims["seen_roles"]) == ("acme", ["editor"])

    await service.user_admin.set_app_metadata(uid, {"tenant": "globex"}, OPERATOR)
    await grant_role(service, "auditor", ["audit:read"])
    rotated = await api.refresh(refresh_cookie(login))
    assert rotated.status_code == 200
    claims = claims_of(rotated.json()["access_token"])
    assert (claims["tenant"], claims["seen_roles"]) == ("globex", ["auditor", "editor"])
    request = hook.requests[-1]
    assert request.grant is TokenGrant.REFRESH
    assert request.session_id == claims["sid"]
    assert request.roles == ("auditor", "editor")


async def test_user_metadata_never_reaches_the_hook(
    api: Api, service: Any, hook: ScriptedHook
) -> None:
    """user_metadata is the user's own to write: nothing of it is handed to the hook, which
    may grant on what it is told (app_metadata only)."""
    access, refresh = await api.signed_up()
    patched = await api.http.patch(
        "/auth/me",
        json={"user_metadata": {"tenant": "someone-elses", "note": "user-written-marker"}},
        headers={"Authorization": f"Bearer {access}"},
    )
    assert patched.status_code == 200
    assert (await api.refresh(refresh)).status_code == 200
    request = hook.requests[-1]
    assert request.grant is TokenGrant.REFRESH
    assert not hasattr(request, "user_metadata")
    assert dict(request.app_metadata) == {}
    assert dict(request.user.user_metadata) == {}, "ClaimsRequest.user carries user_metadata"
    assert "user-written-marker" not in repr(request), "the hook was handed user_metadata"


@pytest.mark.parametrize("grant", ["login", "refresh"])
async def test_reserved_claims_from_the_hook_never_replace_tokenwards(
    api: Api, service: Any, hook: ScriptedHook, grant: str
) -> None:
    """Every reserved name the hook answers is dropped: sub, sid, roles, scope, iss, exp...
    stay tokenward's, and those tokenward leaves out stay out; the other claims still pass."""
    hook.answers({name: f"hook-{name}" for name in RESERVED_CLAIMS} | {"tenant": "acme"})
    await register(api)
    await grant_role(service, "editor", ["posts:write"])
    response = await api.login(EMAIL)
    if grant == "refresh":
        response = await api.refresh(refresh_cookie(response))
    assert response.status_code == 200
    access = response.json()["access_token"]
    claims = claims_of(access)
    assert claims["tenant"] == "acme"
    for name in RESERVED_CLAIMS:
        assert claims.get(name) != f"hook-{name}", name
    assert claims["sub"] == await user_id(service)
    assert claims["iss"] == service.settings.issuer
    assert claims["roles"] == ["editor"]
    assert claims["scope"] == "posts:write"
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == service.settings.access_ttl.total_seconds()
    sessions = (await api.http.get("/auth/sessions", headers=bearer(access))).json()
    assert claims["sid"] in str(sessions)
    # How the session authenticated is tokenward's to say: a password, at the sign-in.
    assert (claims["amr"], claims["acr"]) == (["pwd"], "aal1")
    assert isinstance(claims["auth_time"], int)
    for absent in ("nbf", "typ"):
        assert absent not in claims
    if service.settings.audience is None:
        assert "aud" not in claims
    assert (await api.me(access)).status_code == 200


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def test_a_wrong_password_or_a_dead_refresh_token_never_reaches_the_hook(
    api: Api, hook: ScriptedHook
) -> None:
    """The hook is asked for authenticated requests only: a broken hook does not turn a wrong
    password or a logged-out refresh token into a 503 (they stay 401, the cookie cleared)."""
    _, refresh = await api.signed_up()
    assert (await api.logout(refresh)).status_code == 204
    hook.requests.clear()
    hook.raises(RuntimeError("the hook's database is down"))
    assert (await api.login(EMAIL, "not the password at all 1")).status_code == 401
    dead = await api.refresh(refresh)
    assert dead.status_code == 401
    assert f"{COOKIE}=" in dead.headers["set-cookie"]
    assert (await api.refresh("twr_garbage")).status_code == 401
    assert hook.requests == []


# -- failures: 503, nothing written ----------------------------------------------------------


@both_kinds
@pytest.mark.parametrize("endpoint", ["/auth/login", "/auth/token"])
async def test_a_raising_hook_fails_login_with_503_and_starts_no_session(
    api: Api, service: Any, hook: ScriptedHook, endpoint: str
) -> None:
    """No token without the deployment's claims: the login is refused with a retryable 503,
    no session is left behind, and the failure is an event (without the hook's error text)."""
    await register(api)
    hook.raises(RuntimeError("secret hook internals"))
    if endpoint == "/auth/login":
        response = await api.login(EMAIL)
    else:
        response = await token_grant(api, grant_type="password", username=EMAIL, password=PASSWORD)
    assert_claims_unavailable(response)
    assert "secret hook internals" not in response.text
    assert (await counts(service))[1:] == (0, 0)
    await assert_hook_failed(service, "raised", "login")
    assert await events(service, "login.succeeded") == []

    hook.answers({"tenant": "acme"})
    recovered = await api.login(EMAIL)
    assert recovered.status_code == 200
    access = recovered.json()["access_token"]
    listed = (await api.http.get("/auth/sessions", headers=bearer(access))).json()
    assert len(listed["sessions"]) == 1
    assert claims_of(access)["tenant"] == "acme"


@both_kinds
@pytest.mark.parametrize("endpoint", ["/auth/refresh", "/auth/token"])
async def test_a_raising_hook_fails_refresh_and_the_presented_token_still_works(
    api: Api, service: Any, clock: FakeClock, hook: ScriptedHook, endpoint: str
) -> None:
    """A failed refresh writes no rotation: the cookie is neither replaced nor cleared, and the
    same refresh token works once the hook recovers, even long after (no reuse detection)."""
    access, refresh = await api.signed_up()
    sid = claims_of(access)["sid"]
    before = await counts(service)
    hook.raises(RuntimeError("down"))

    async def present() -> httpx.Response:
        if endpoint == "/auth/refresh":
            return await api.refresh(refresh)
        return await token_grant(api, grant_type="refresh_token", refresh_token=refresh)

    assert_claims_unavailable(await present())
    assert await counts(service) == before
    await assert_hook_failed(service, "raised", "refresh", session_id=sid)

    clock.advance(60)  # far past the reuse interval: a written rotation would now be a reuse
    hook.answers({"tenant": "acme"})
    recovered = await present()
    assert recovered.status_code == 200, recovered.text
    assert claims_of(recovered.json()["access_token"])["tenant"] == "acme"
    assert claims_of(recovered.json()["access_token"])["sid"] == sid
    assert await events(service, "refresh.reuse_detected") == []


@both_kinds
@pytest.mark.parametrize("settings_overrides", [SHORT_TIMEOUT], ids=["timeout=0.3s"])
async def test_a_hook_past_the_timeout_fails_login_without_waiting_for_it(
    api: Api, service: Any, hook: ScriptedHook
) -> None:
    """A hung hook (a blocking call in a plain function, or an awaiting coroutine) costs the
    client the timeout, not the hang: 503 timed_out, no session; the next login works."""
    await register(api)
    hook.block()
    started_at = time.monotonic()
    try:
        response = await api.login(EMAIL)
    finally:
        hook.release()
    elapsed = time.monotonic() - started_at
    assert_claims_unavailable(response)
    assert elapsed < 10, f"the login waited {elapsed:.1f} s for a hook with a 0.3 s timeout"
    assert (await counts(service))[1] == 0
    await assert_hook_failed(service, "timed_out", "login")
    assert (await api.login(EMAIL)).status_code == 200


@both_kinds
@pytest.mark.parametrize("settings_overrides", [SHORT_TIMEOUT], ids=["timeout=0.3s"])
async def test_a_hook_past_the_timeout_fails_refresh_and_writes_no_rotation(
    api: Api, service: Any, clock: FakeClock, hook: ScriptedHook
) -> None:
    """At refresh a hung hook is a 503 timed_out too, and the presented token stays current."""
    _, refresh = await api.signed_up()
    before = await counts(service)
    hook.block()
    try:
        response = await api.refresh(refresh)
    finally:
        hook.release()
    assert_claims_unavailable(response)
    assert await counts(service) == before
    await assert_hook_failed(service, "timed_out", "refresh")
    clock.advance(60)
    assert (await api.refresh(refresh)).status_code == 200


class Unserialisable:
    pass


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param(["tenant", "acme"], "not_a_mapping", id="list"),
        pytest.param("tenant=acme", "not_a_mapping", id="string"),
        pytest.param(None, "not_a_mapping", id="None"),
        pytest.param(42, "not_a_mapping", id="number"),
        pytest.param({1: "numeric key"}, "not_a_mapping", id="non-string key"),
        pytest.param({"when": datetime(2026, 1, 1, tzinfo=UTC)}, "not_json", id="datetime"),
        pytest.param({"ratio": math.nan}, "not_json", id="NaN"),
        pytest.param({"ratio": math.inf}, "not_json", id="Infinity"),
        pytest.param({"tags": {"a", "b"}}, "not_json", id="set"),
        pytest.param({"raw": b"bytes"}, "not_json", id="bytes"),
        pytest.param({"thing": Unserialisable()}, "not_json", id="object"),
        # 2049 bytes of compact JSON; the cap is 2048
        pytest.param({"blob": "x" * 2038}, "too_large", id="over the cap"),
    ],
)
async def test_an_unusable_answer_fails_login_with_its_reason(
    api: Api, service: Any, hook: ScriptedHook, answer: object, reason: str
) -> None:
    """What cannot go in a token (not an object of string keys, not JSON, over the cap) is a
    503 naming the reason in the event, and no session."""
    await register(api)
    hook.answers(answer)
    assert_claims_unavailable(await api.login(EMAIL))
    assert (await counts(service))[1] == 0
    await assert_hook_failed(service, reason, "login")


@pytest.mark.parametrize(
    "settings_overrides", [{}, {"claims_max_bytes": 64}], ids=["default cap", "cap=64"]
)
async def test_extra_claims_exactly_at_the_cap_pass_and_one_byte_more_fails(
    api: Api, service: Any, hook: ScriptedHook
) -> None:
    """TOKENWARD_CLAIMS_MAX_BYTES is inclusive, and counts the compact JSON of the extra
    claims only: reserved names the hook also answers are dropped before measuring."""
    cap = service.settings.claims_max_bytes
    filler = cap - len('{"blob":""}')
    hook.answers({"blob": "x" * filler, "sub": "y" * 10_000})
    access, refresh = await api.signed_up()
    assert claims_of(access)["blob"] == "x" * filler
    hook.answers({"blob": "x" * (filler + 1)})
    assert_claims_unavailable(await api.refresh(refresh))
    await assert_hook_failed(service, "too_large", "refresh")


WIDE_SCOPE = [f"p{i:02d}:" + "x" * 96 for i in range(40)]
"""40 permissions of 100 characters: a 4 KB scope claim, past what one user may hold."""


HALF_SCOPE = [f"q{i:02d}:" + "x" * 96 for i in range(12)]
"""12 permissions of 100 characters: a role that fits alone, but not twice."""


async def test_a_role_too_large_for_a_token_is_refused_when_created(service: Any) -> None:
    """A role whose permissions alone would not fit in a token is refused on creation, with
    422 invalid-role: no such role exists afterwards."""
    with pytest.raises(InvalidRoleError):
        await service.roles.put("wide", WIDE_SCOPE, OPERATOR)
    assert await service.roles.list() == []


async def test_a_grant_that_would_make_tokens_too_long_is_refused_and_changes_nothing(
    api: Api, service: Any
) -> None:
    """Roles that fit one by one but together would not fit in a token (with the hook's
    claims at their cap, past the 8192 characters verifiers read) are refused when granted,
    with 422 invalid-role, not at a later refresh that could then only fail: the user keeps
    what they held and their tokens keep working."""
    _, refresh = await api.signed_up()
    await service.roles.put("left", [p.replace("q", "l", 1) for p in HALF_SCOPE], OPERATOR)
    await service.roles.put("right", [p.replace("q", "r", 1) for p in HALF_SCOPE], OPERATOR)
    user = await user_id(service)
    await service.roles.grant(user, "left", OPERATOR)
    with pytest.raises(InvalidRoleError):
        await service.roles.grant(user, "right", OPERATOR)
    assert (await service.roles.grants(user)).roles == ("left",)
    refreshed = await api.refresh(refresh)
    assert refreshed.status_code == 200
    assert claims_of(refreshed.json()["access_token"])["roles"] == ["left"]


async def test_new_permissions_that_would_make_a_holders_tokens_too_long_are_refused(
    api: Api, service: Any
) -> None:
    """Replacing a role's permissions is checked against every holder: past the budget for one
    of them, 422 and the role keeps its permissions."""
    await register(api)
    await grant_role(service, "editor", ["notes:read"])
    await grant_role(service, "writer", HALF_SCOPE)
    with pytest.raises(InvalidRoleError):
        await service.roles.put("editor", [p.replace("q", "e", 1) for p in HALF_SCOPE], OPERATOR)
    roles = {role.name: role.permissions for role in await service.roles.list()}
    assert roles["editor"] == ("notes:read",)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
async def test_the_largest_token_the_caps_allow_still_fits_what_verifiers_read(
    tmp_path: Path, clock: FakeClock, alg: str
) -> None:
    """The caps add up: a 255-character issuer and audience, roles and permissions at their
    budget and the hook's claims at the largest TOKENWARD_CLAIMS_MAX_BYTES give a token within
    the 8192 characters a verifier reads, for every asymmetric algorithm (RS256's signature is
    the longest)."""
    origin = "https://" + "a" * 240 + ".example"
    settings = make_settings(
        tmp_path / "data",
        issuer=origin[:255],
        audience="urn:" + "b" * 251,
        signing_alg=alg,
        claims_max_bytes=3072,
    )
    filler = 3072 - len('{"blob":""}')
    app = create_app(
        settings,
        clock=clock,
        hasher=FAST_HASHER,
        claims_hook=lambda _: {"blob": "x" * filler},
    )
    async with (
        LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http,
    ):
        api = Api(http)
        service = app.state.service
        await register(api)
        # Role names and permissions up to the budget (MAX_GRANTS_BYTES), one more refused.
        permissions = [f"perm:{i:03d}:" + "y" * 40 for i in range(100)]
        granted = 0
        await service.roles.put("r", [], OPERATOR)
        await service.roles.grant(await user_id(service), "r", OPERATOR)
        for count in range(1, len(permissions) + 1):
            try:
                await service.roles.put("r", permissions[:count], OPERATOR)
            except InvalidRoleError:
                break
            granted = count
        assert 0 < granted < len(permissions)
        login = await api.login(EMAIL)
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        assert len(token) <= MAX_TOKEN_LENGTH
        assert len(claims_of(token)["scope"].split()) == granted


# -- configured by import path, or passed in by an embedding app -----------------------------

HOOK_SOURCE = """
import asyncio

NOT_CALLABLE = {"tenant": "x"}


def claims(request):
    return {"tenant": request.app_metadata.get("tenant", "none"), "via": "plain"}


async def claims_async(request):
    await asyncio.sleep(0)
    return {"tenant": request.app_metadata.get("tenant", "none"), "via": "coroutine"}


class Hooks:
    @staticmethod
    def claims(request):
        return {"tenant": "none", "via": "attribute"}
"""


@pytest.mark.parametrize(
    ("function", "via"),
    [("claims", "plain"), ("claims_async", "coroutine"), ("Hooks.claims", "attribute")],
)
async def test_the_hook_is_configured_by_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, function: str, via: str
) -> None:
    """TOKENWARD_CLAIMS_HOOK=module:function (a plain or coroutine function, or an attribute
    path) is imported at start-up and asked at login and refresh."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    module = write_hook_module(hooks, HOOK_SOURCE)
    monkeypatch.syspath_prepend(str(hooks))
    settings = make_settings(tmp_path / "data", claims_hook=f"{module}:{function}")
    async with started(settings, clock) as (api, service):
        await register(api)
        await service.user_admin.set_app_metadata(
            await user_id(service), {"tenant": "acme"}, OPERATOR
        )
        login = await api.login(EMAIL)
        assert login.status_code == 200
        claims = claims_of(login.json()["access_token"])
        assert claims["via"] == via
        assert claims["tenant"] == ("none" if via == "attribute" else "acme")
        rotated = await api.refresh(refresh_cookie(login))
        assert claims_of(rotated.json()["access_token"])["via"] == via


@pytest.mark.parametrize(
    "target",
    ["tokenward_no_such_module_anywhere:claims", "{module}:missing", "{module}:NOT_CALLABLE"],
    ids=["no module", "no attribute", "not callable"],
)
async def test_a_hook_path_that_cannot_be_loaded_fails_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, target: str
) -> None:
    """A misconfigured hook stops the server at start, naming the variable: never a server
    that issues tokens without the claims the deployment relies on."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    module = write_hook_module(hooks, HOOK_SOURCE)
    monkeypatch.syspath_prepend(str(hooks))
    settings = make_settings(tmp_path / "data", claims_hook=target.format(module=module))
    with pytest.raises(ConfigError, match="TOKENWARD_CLAIMS_HOOK"):
        async with started(settings, clock):
            pass


async def test_a_hook_module_that_raises_on_import_fails_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """A module whose import fails (here: its own missing dependency) is a ConfigError too."""
    module = write_hook_module(tmp_path, "import tokenward_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = make_settings(tmp_path / "data", claims_hook=f"{module}:claims")
    with pytest.raises(ConfigError, match="TOKENWARD_CLAIMS_HOOK"):
        async with started(settings, clock):
            pass


@pytest.mark.parametrize("value", ["no_function_named", "a-module:claims", "mod:", ":claims"])
def test_a_malformed_hook_path_is_refused_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """TOKENWARD_CLAIMS_HOOK must read module.path:function; anything else is refused when the
    settings load, before any import is tried."""
    from tokenward.infra.config import load_settings

    monkeypatch.setenv("TOKENWARD_CLAIMS_HOOK", value)
    with pytest.raises(ConfigError, match="TOKENWARD_CLAIMS_HOOK"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOKENWARD_CLAIMS_HOOK_TIMEOUT", "0"),
        ("TOKENWARD_CLAIMS_HOOK_TIMEOUT", "soon"),
        ("TOKENWARD_CLAIMS_MAX_BYTES", "63"),
        ("TOKENWARD_CLAIMS_MAX_BYTES", "-1"),
    ],
)
def test_a_zero_timeout_or_a_tiny_cap_is_refused_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A timeout of nothing would fail every login, a cap under 64 bytes every token: both are
    refused when the settings load, naming the variable."""
    from tokenward.infra.config import load_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings(_env_file=None)


def test_the_timeout_and_cap_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TOKENWARD_CLAIMS_HOOK_TIMEOUT takes seconds or a unit (``1``, ``2s``, ``1m``); the
    defaults are 2 s and 2048 bytes."""
    from tokenward.infra.config import load_settings

    defaults = load_settings(_env_file=None)
    assert defaults.claims_hook_timeout == timedelta(seconds=2)
    assert defaults.claims_max_bytes == 2048
    assert defaults.claims_hook is None
    for text, seconds in [("1", 1), ("5s", 5), ("1m", 60)]:
        monkeypatch.setenv("TOKENWARD_CLAIMS_HOOK_TIMEOUT", text)
        assert load_settings(_env_file=None).claims_hook_timeout == timedelta(seconds=seconds)
    monkeypatch.setenv("TOKENWARD_CLAIMS_MAX_BYTES", "64")
    assert load_settings(_env_file=None).claims_max_bytes == 64


async def test_an_embedding_app_passes_the_hook_as_a_function(
    tmp_path: Path, hook: ScriptedHook
) -> None:
    """create_app(settings, claims_hook=fn) mounted in a host app: tokens carry the claims,
    and the host's in-process check (embedded_user) reads them."""
    hook.answer = lambda request: {"tenant": "acme", "grant_seen": request.grant.value}
    identity = create_app(
        make_settings(tmp_path / "data"), hasher=FAST_HASHER, claims_hook=hook.function
    )
    current_user = embedded_user(identity)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with tokenward_lifespan(identity):
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/id", identity)

    @host.get("/tenant")
    async def tenant(user: Principal = Depends(current_user)) -> dict[str, Any]:  # noqa: B008
        return {"tenant": user.claims.raw["tenant"]}

    async with LifespanManager(
        host, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            credentials = {"email": EMAIL, "password": PASSWORD}
            assert (await client.post("/id/auth/register", json=credentials)).status_code == 201
            login = await client.post("/id/auth/login", json=credentials)
            assert login.status_code == 200
            access = login.json()["access_token"]
            assert claims_of(access)["tenant"] == "acme"
            mine = await client.get("/tenant", headers=bearer(access))
            assert mine.json() == {"tenant": "acme"}
            client.cookies.clear()
            rotated = await client.post(
                "/id/auth/refresh", headers={"Cookie": f"{COOKIE}={refresh_cookie(login)}"}
            )
            assert claims_of(rotated.json()["access_token"])["grant_seen"] == "refresh"


# -- hung hooks, and a sign-in racing a revocation --------------------------------------------


@pytest.mark.parametrize("settings_overrides", [SHORT_TIMEOUT], ids=["timeout=0.3s"])
async def test_hung_plain_hooks_fail_fast_once_their_threads_are_all_held(
    api: Api, service: Any, hook: ScriptedHook
) -> None:
    """A plain-function hook that hangs (its database is gone) holds a thread of its own, not
    one that password hashing needs: with every hook thread hung, sign-ins fail at once with
    503 ``busy`` rather than queue, registration (a hash) still works, and once the hook
    answers again sign-ins do too."""
    from tokenward.app.claims import HOOK_THREADS

    assert (await api.register(EMAIL)).status_code == 201
    hook.block()
    hung = await asyncio.gather(*(api.login(EMAIL) for _ in range(HOOK_THREADS)))
    assert {response.status_code for response in hung} == {503}
    started = time.monotonic()
    busy = await api.login(EMAIL)
    assert_claims_unavailable(busy)
    assert time.monotonic() - started < 0.25, "a busy hook pool must answer at once"
    reasons = [event.detail["reason"] for event in await events(service, "claims.hook_failed")]
    assert reasons.count("timed_out") == HOOK_THREADS and reasons.count("busy") == 1
    assert (await api.register("grace@example.com")).status_code == 201  # hashing unaffected
    hook.release()
    for _ in range(50):  # the hung threads return now and give their slots back
        answer = await api.login(EMAIL)
        if answer.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert answer.status_code == 200, answer.text


async def test_a_sign_in_racing_a_revocation_never_gets_the_revoked_role(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A revocation with end_sessions that commits while a sign-in is between its token and
    its session (here: while the claims hook is being asked) must not leave that new session
    with a token carrying the revoked role: the sign-in notices the roles changed and signs
    anew, without them."""
    box: dict[str, Any] = {}
    seen: list[tuple[str, ...]] = []

    async def revoking_hook(request: ClaimsRequest) -> dict[str, Any]:
        seen.append(request.roles)
        if len(seen) == 1:
            service = box["service"]
            await service.roles.revoke(request.user.id, "admin", OPERATOR, end_sessions=True)
        return {}

    settings = make_settings(tmp_path / "data")
    app = create_app(settings, clock=clock, hasher=FAST_HASHER, claims_hook=revoking_hook)
    async with (
        LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http,
    ):
        api = Api(http)
        box["service"] = service = app.state.service
        await register(api)
        await grant_role(service, "admin", ["notes:purge"])
        login = await api.login(EMAIL)
        assert login.status_code == 200, login.text
        assert "roles" not in claims_of(login.json()["access_token"])
        assert seen == [("admin",), ()]
        me = await api.me(login.json()["access_token"])
        assert me.status_code == 200 and me.json()["roles"] == []
