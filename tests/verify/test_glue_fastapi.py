"""examples/fastapi_app.py in-process, its verifier fed by a real tokenward's JWKS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI

from tokenward.testing import TokenFactory
from tokenward.verify import Claims, Verifier
from tokenward.verify.fastapi import require_acr, require_scopes

from .corpus import ISSUER, NOW, Forger
from .support import (
    ADMIN,
    READER,
    REVOCATION_BOUND,
    FakeClock,
    Login,
    Tokenward,
    example_roles,
    feed_verifier,
    free_port,
    load_example,
    role_path,
)
from .test_verifier_server import flip_signature_byte

EXAMPLE = load_example("fastapi_app")
FORGER = Forger()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=120):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notes") as client:
            yield client


@pytest.fixture
async def api(tokenward: Tokenward) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(EXAMPLE.create_app(Verifier(tokenward.issuer))) as client:
        yield client


@pytest.fixture
async def local_api() -> AsyncIterator[httpx.AsyncClient]:
    """The same app trusting a local key, for every combination of scopes and roles (the
    role flows against the real tokenward are at the end of this module)."""
    verifier = Verifier(ISSUER, key=FORGER.key.public_key(), clock=FakeClock(wall=NOW))
    async with serving(EXAMPLE.create_app(verifier)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_real_token_reaches_the_route(api: httpx.AsyncClient, alice: Login) -> None:
    """Depends(verifier) hands the route the claims of tokenward's token."""
    response = await api.get("/me", headers=bearer(alice.access_token))
    assert response.status_code == 200
    assert response.json() == {"sub": alice.claims["sub"], "sid": alice.claims["sid"], "scope": []}


@pytest.mark.parametrize("authorization", [None, "Basic YWxpY2U6cHc=", "Token abc"])
async def test_no_bearer_credentials_get_a_challenge_without_error(
    api: httpx.AsyncClient, authorization: str | None
) -> None:
    """No Bearer credentials: 401 `Bearer realm="api"`, no error code (RFC 6750 3.1)."""
    headers = {"Authorization": authorization} if authorization else {}
    response = await api.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize("kind", ["garbage", "empty", "tampered", "refresh-token"])
async def test_a_bad_token_gets_invalid_token(
    api: httpx.AsyncClient, alice: Login, kind: str
) -> None:
    """Any refused token: 401 with error="invalid_token"; the answer says nothing of it."""
    token = {
        "garbage": "not-a-jwt",
        "empty": "",
        "tampered": flip_signature_byte(alice.access_token),
        "refresh-token": alice.refresh_token,
    }[kind]
    response = await api.get("/me", headers={"Authorization": f"Bearer {token}".strip()})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
    assert response.json() == {"detail": "invalid token"}
    if token:
        assert token not in response.text


async def test_a_missing_scope_is_403_insufficient_scope(
    api: httpx.AsyncClient, alice: Login
) -> None:
    """Alice holds no role, so her token carries no scope: /notes answers 403 naming the
    scope it needs."""
    response = await api.get("/notes", headers=bearer(alice.access_token))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="notes:read"'
    )


async def test_public_routes_need_no_token(api: httpx.AsyncClient) -> None:
    """/healthz is open, and the lifespan warmed the verifier up."""
    response = await api.get("/healthz")
    assert response.json() == {"ok": True, "verifier_ready": True}


async def test_openapi_declares_the_bearer_scheme(api: httpx.AsyncClient) -> None:
    """The docs' Authorize button works: HTTP bearer security on protected operations."""
    spec = (await api.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    assert spec["paths"]["/me"]["get"]["security"]
    assert "security" not in spec["paths"]["/healthz"]["get"]


@pytest.mark.parametrize(
    ("path", "method", "claims", "status"),
    [
        ("/notes", "GET", {"scope": "notes:read notes:write"}, 200),
        ("/notes", "GET", {"scope": "notes:write"}, 403),
        ("/notes", "DELETE", {"roles": ["admin"]}, 200),
        ("/notes", "DELETE", {"roles": ["editor"], "scope": "notes:read"}, 403),
    ],
)
async def test_scopes_and_roles(
    local_api: httpx.AsyncClient, path: str, method: str, claims: dict[str, Any], status: int
) -> None:
    """require_scopes and require_roles let through exactly the tokens that hold them."""
    token = FORGER.sign(claims=FORGER.claims(**claims))
    response = await local_api.request(method, path, headers=bearer(token))
    assert response.status_code == status
    if status == 403:
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("claims", [{}, {"roles": ["editor"], "scope": "notes:read admin"}])
async def test_a_missing_role_is_403_missing_role_not_a_scope(
    local_api: httpx.AsyncClient, claims: dict[str, Any]
) -> None:
    """Issue 13: a role is not a scope. 403 whose body and error_description say "missing
    role"; RFC 6750's only 403 code stays in the challenge, with no scope= (none is missing)."""
    token = FORGER.sign(claims=FORGER.claims(**claims))
    response = await local_api.delete("/notes", headers=bearer(token))
    assert response.status_code == 403
    assert response.json() == {"detail": "missing role"}
    assert response.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", error_description="missing role"'
    )


async def test_tokenward_unreachable_is_503_not_401() -> None:
    """No key set could be fetched: 503 with Retry-After, so clients do not drop their token."""
    verifier = Verifier(f"http://127.0.0.1:{free_port()}", http_timeout=1)
    async with serving(EXAMPLE.create_app(verifier)) as client:
        response = await client.get("/me", headers=bearer(FORGER.sign()))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


async def test_the_module_app_reads_its_issuer_from_the_environment(
    tokenward: Tokenward, alice: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`uvicorn fastapi_app:app` with TOKENWARD_ISSUER set: the shipped app as it runs."""
    monkeypatch.setenv("TOKENWARD_ISSUER", tokenward.issuer)
    module = load_example("fastapi_app")
    async with serving(module.app) as client:
        response = await client.get("/me", headers=bearer(alice.access_token))
    assert response.status_code == 200


# -- step-up authentication (issue 17, RFC 9470), tokens minted by tokenward.testing ---------

# The service as its own module would define it (module level: with `from __future__ import
# annotations`, FastAPI resolves the annotations in the globals).
payments_verifier = Verifier(issuer="https://auth.example.com")
payments_app = FastAPI()


@payments_app.post(
    "/transfers", dependencies=[Depends(require_scopes(payments_verifier, "payments:write"))]
)
async def transfer(
    user: Annotated[Claims, Depends(require_acr(payments_verifier, "aal2", max_auth_age=300))],
) -> dict[str, Any]:
    return {"by": user.sub, "acr": user.acr, "amr": list(user.amr)}


@pytest.fixture
async def payments() -> AsyncIterator[tuple[TokenFactory, httpx.AsyncClient]]:
    """The payments service, its verifier overridden by a TokenFactory's (the documented way
    to test a service without tokenward)."""
    tokens = TokenFactory(issuer="https://auth.example.com")
    payments_app.dependency_overrides[payments_verifier] = fake = tokens.verifier()
    transport = httpx.ASGITransport(app=payments_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
        yield tokens, client
    payments_app.dependency_overrides.clear()
    await fake.aclose()


STEP_UP = 'Bearer realm="api", error="insufficient_user_authentication", error_description="{}"'
LEVEL = "A different authentication level is required"
RECENCY = "More recent authentication is required"
BOTH = "A different authentication level and more recent authentication are required"


@pytest.mark.parametrize(
    ("acr", "age", "scope", "status", "description"),
    [
        ("aal2", 0, "payments:write", 200, None),
        ("aal3", 300, "payments:write", 200, None),  # aal3 meets aal2; 300 s is the edge
        ("aal1", 0, "payments:write", 401, LEVEL),
        (None, 0, "payments:write", 401, LEVEL),
        ("aal2", 301, "payments:write", 401, RECENCY),
        ("aal2", None, "payments:write", 401, RECENCY),  # no auth_time: not recent
        ("aal1", 301, "payments:write", 401, BOTH),
        ("aal1", 301, None, 403, None),  # the scope is checked first: stepping up won't grant it
    ],
)
async def test_require_acr_with_max_auth_age(
    payments: tuple[TokenFactory, httpx.AsyncClient],
    acr: str | None,
    age: int | None,
    scope: str | None,
    status: int,
    description: str | None,
) -> None:
    """require_acr(verifier, "aal2", max_auth_age=300), composed with require_scopes: a token
    that falls short gets 401 insufficient_user_authentication naming acr_values and max_age
    (RFC 9470 3), whichever fell short; one that meets both reaches the route."""
    tokens, client = payments
    auth_time = None if age is None else tokens.clock.now - age
    token = tokens.issue("alice", scope=scope, amr=["pwd", "otp"], acr=acr, auth_time=auth_time)
    response = await client.post("/transfers", headers=bearer(token))
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"by": "alice", "acr": acr, "amr": ["pwd", "otp"]}
    elif status == 401:
        assert response.json() == {"detail": "insufficient user authentication"}
        assert response.headers["www-authenticate"] == (
            STEP_UP.format(description) + ', acr_values="aal2", max_age="300"'
        )
    else:
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_max_auth_age_runs_on_the_clock_of_the_verifier_in_use(
    payments: tuple[TokenFactory, httpx.AsyncClient],
) -> None:
    """With the verifier overridden by a test's fake, max_auth_age is measured on the fake's
    clock: advancing it past 300 s turns the same token away (the production verifier's clock
    would not have moved)."""
    tokens, client = payments
    token = tokens.issue(scope="payments:write", acr="aal2", auth_time=tokens.clock.now)
    assert (await client.post("/transfers", headers=bearer(token))).status_code == 200
    tokens.clock.advance(301)
    aged = await client.post("/transfers", headers=bearer(token))
    assert aged.status_code == 401
    assert (
        'error_description="More recent authentication is required"'
        in (aged.headers["www-authenticate"])
    )


def test_a_requirement_that_cannot_be_stated_fails_at_definition() -> None:
    """require_acr with no acr and no max_auth_age, or a bad one, is a ValueError at import."""
    with pytest.raises(ValueError, match="requirement"):
        require_acr(payments_verifier)
    with pytest.raises(ValueError, match="max_age"):
        require_acr(payments_verifier, "aal2", max_auth_age=-1)


# -- roles granted and revoked on a real tokenward --------------------------------------------


@pytest.fixture
def roles(tokenward: Tokenward) -> None:
    example_roles(tokenward)


async def test_roles_granted_and_revoked_open_and_close_the_routes_at_the_next_refresh(
    api: httpx.AsyncClient, tokenward: Tokenward, roles: None
) -> None:
    """The acceptance, with require_scopes and require_roles: 403 before the grant; granted
    (the CLI, then the admin API), tokenward's /auth/me says so at once, the token in hand
    still opens nothing, the next refresh's token opens the route; revoked (the CLI, then the
    API), the next refresh's token is refused again."""
    user = tokenward.login()
    assert (await api.get("/notes", headers=bearer(user.access_token))).status_code == 403
    assert (await api.delete("/notes", headers=bearer(user.access_token))).status_code == 403

    tokenward.ok_cli("users", "grant", user.email, READER)
    assert tokenward.me(user.access_token)["scope"] == "notes:read"
    assert (await api.get("/notes", headers=bearer(user.access_token))).status_code == 403
    user = tokenward.refresh(user)
    assert (user.claims["roles"], user.claims["scope"]) == ([READER], "notes:read")
    notes = await api.get("/notes", headers=bearer(user.access_token))
    assert notes.status_code == 200
    assert notes.json() == {"owner": user.claims["sub"], "notes": ["buy milk"]}
    purge = await api.delete("/notes", headers=bearer(user.access_token))
    assert (purge.status_code, purge.json()) == (403, {"detail": "missing role"})

    assert tokenward.admin("PUT", role_path(user, ADMIN)).status_code == 204
    assert tokenward.me(user.access_token)["roles"] == [ADMIN, READER]
    user = tokenward.refresh(user)
    purge = await api.delete("/notes", headers=bearer(user.access_token))
    assert (purge.status_code, purge.json()) == (200, {"purged_by": user.claims["sub"]})

    tokenward.ok_cli("users", "revoke", user.email, READER)
    user = tokenward.refresh(user)
    assert (user.claims["roles"], user.claims["scope"]) == ([ADMIN], "notes:purge")
    refused = await api.get("/notes", headers=bearer(user.access_token))
    assert refused.status_code == 403
    assert 'scope="notes:read"' in refused.headers["www-authenticate"]
    assert (await api.delete("/notes", headers=bearer(user.access_token))).status_code == 200

    assert tokenward.admin("DELETE", role_path(user, ADMIN)).status_code == 204
    user = tokenward.refresh(user)
    assert "roles" not in user.claims and "scope" not in user.claims
    assert (await api.delete("/notes", headers=bearer(user.access_token))).status_code == 403


async def test_cli_revoke_with_end_sessions_reaches_the_example_within_the_bound(
    tokenward: Tokenward, roles: None
) -> None:
    """`tokenward users revoke EMAIL admin --end-sessions`: the example, its verifier
    following the real revocation feed, refuses the old token (which still says admin) with
    401 invalid_token within its bound of the command's return; the refresh token is dead."""
    verifier = feed_verifier(tokenward)
    user = tokenward.login()
    assert tokenward.admin("PUT", role_path(user, ADMIN)).status_code == 204
    user = tokenward.refresh(user)
    assert user.claims["roles"] == [ADMIN]
    async with serving(EXAMPLE.create_app(verifier)) as notes:
        assert (await notes.delete("/notes", headers=bearer(user.access_token))).status_code == 200
        tokenward.ok_cli("users", "revoke", user.email, ADMIN, "--end-sessions")
        returned = time.monotonic()
        while (
            response := await notes.delete("/notes", headers=bearer(user.access_token))
        ).is_success:
            assert time.monotonic() - returned <= REVOCATION_BOUND, "still accepted past the bound"
            await asyncio.sleep(0.05)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
    assert tokenward.refresh_status(user) == 401
