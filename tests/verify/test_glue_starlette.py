"""examples/starlette_app.py in-process (the ASGI middleware), keys from a real tokenward."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenward.testing import TokenFactory
from tokenward.verify import Claims, Verifier
from tokenward.verify.starlette import BearerAuthMiddleware, StepUpMiddleware

from .corpus import ISSUER, NOW, Forger
from .support import READER, FakeClock, Login, Tokenward, example_roles, load_example, role_path
from .test_glue_fastapi import bearer, serving
from .test_verifier_server import flip_signature_byte

EXAMPLE = load_example("starlette_app")
FORGER = Forger()


@pytest.fixture
async def api(tokenward: Tokenward) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(EXAMPLE.create_app(Verifier(tokenward.issuer))) as client:
        yield client


async def test_the_claims_are_in_request_state(api: httpx.AsyncClient, alice: Login) -> None:
    """A real token passes; the route reads request.state.claims."""
    response = await api.get("/me", headers=bearer(alice.access_token))
    assert response.status_code == 200
    assert response.json() == {"sub": alice.claims["sub"], "sid": alice.claims["sid"]}


async def test_refusals(api: httpx.AsyncClient, alice: Login) -> None:
    """No credentials: 401 without error; a tampered token: 401 invalid_token; no scope: 403."""
    missing = await api.get("/me")
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, 'Bearer realm="api"')
    tampered = flip_signature_byte(alice.access_token)
    refused = await api.get("/me", headers=bearer(tampered))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
    assert tampered not in refused.text
    forbidden = await api.get("/notes", headers=bearer(alice.access_token))
    assert forbidden.status_code == 403
    assert 'scope="notes:read"' in forbidden.headers["www-authenticate"]


async def test_public_paths_pass_untouched(api: httpx.AsyncClient) -> None:
    """/healthz is listed as public: no token needed."""
    assert (await api.get("/healthz")).json() == {"ok": True, "verifier_ready": True}


async def test_a_scoped_token_reaches_the_notes() -> None:
    """With a token holding notes:read (local key), /notes answers."""
    verifier = Verifier(ISSUER, key=FORGER.key.public_key(), clock=FakeClock(wall=NOW))
    async with serving(EXAMPLE.create_app(verifier)) as client:
        token = FORGER.sign(claims=FORGER.claims(scope="notes:read"))
        response = await client.get("/notes", headers=bearer(token))
    assert response.json() == {"owner": "user-1", "notes": ["buy milk"]}


def test_prefix_public_paths() -> None:
    """A public path ending in * is a prefix; others match exactly."""
    middleware = BearerAuthMiddleware(
        EXAMPLE.create_app(Verifier(ISSUER, key=FORGER.key.public_key())),
        Verifier(ISSUER, key=FORGER.key.public_key()),
        public_paths=["/docs*", "/healthz"],
    )
    assert middleware.is_public("/docs") and middleware.is_public("/docs/oauth2-redirect")
    assert middleware.is_public("/healthz") and not middleware.is_public("/healthz/x")


async def test_websockets_go_through_the_middleware_too(tokenward: Tokenward, alice: Login) -> None:
    """A WebSocket handshake with a valid token reaches the app with the claims in its state;
    without one it is closed with 1008 (policy violation) before the app sees it."""
    seen: list[Any] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["state"]["claims"])

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async with Verifier(tokenward.issuer) as verifier:
        middleware = BearerAuthMiddleware(app, verifier)
        for headers in ([(b"authorization", f"Bearer {alice.access_token}".encode())], []):
            sent: list[MutableMapping[str, Any]] = []

            async def send(message: MutableMapping[str, Any], sent: list[Any] = sent) -> None:
                sent.append(message)

            scope = {"type": "websocket", "path": "/ws", "headers": headers}
            await middleware(scope, receive, send)
            if headers:
                assert sent == [] and seen[0].sub == alice.claims["sub"]
            else:
                assert sent == [{"type": "websocket.close", "code": 1008}]
    assert len(seen) == 1


async def test_lifespan_and_other_scopes_pass_through() -> None:
    """Only http and websocket scopes are checked."""
    calls: list[str] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    middleware = BearerAuthMiddleware(app, Verifier(ISSUER, key=FORGER.key.public_key()))
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert calls == ["lifespan"]


async def test_a_granted_role_reaches_the_notes_at_the_next_refresh_and_a_revoked_one_leaves(
    api: httpx.AsyncClient, tokenward: Tokenward
) -> None:
    """The middleware's scope check against tokenward's tokens: 403 before; granted with
    `tokenward users grant`, 200 from the next refresh's token; revoked through the admin API
    (no end_sessions), /auth/me drops it at once, the token in hand keeps working until it
    expires, and the next refresh's token gets 403 again."""
    example_roles(tokenward)
    user = tokenward.login()
    assert (await api.get("/notes", headers=bearer(user.access_token))).status_code == 403

    tokenward.ok_cli("users", "grant", user.email, READER)
    user = tokenward.refresh(user)
    notes = await api.get("/notes", headers=bearer(user.access_token))
    assert notes.json() == {"owner": user.claims["sub"], "notes": ["buy milk"]}

    assert tokenward.admin("DELETE", role_path(user, READER)).status_code == 204
    now = tokenward.me(user.access_token)
    assert (now["roles"], now["scope"]) == ([], "")
    assert (await api.get("/notes", headers=bearer(user.access_token))).status_code == 200
    user = tokenward.refresh(user)
    refused = await api.get("/notes", headers=bearer(user.access_token))
    assert refused.status_code == 403
    assert 'scope="notes:read"' in refused.headers["www-authenticate"]


# -- step-up authentication (issue 17, RFC 9470), tokens minted by tokenward.testing ---------


def payments_app(verifier: Verifier) -> Starlette:
    """/transfers needs aal2 within 300 s (StepUpMiddleware on the route); /me any token."""

    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.state.claims.sub})

    async def transfer(request: Request) -> JSONResponse:
        claims: Claims = request.state.claims
        return JSONResponse({"by": claims.sub, "acr": claims.acr})

    step_up = Middleware(StepUpMiddleware, verifier=verifier, acr="aal2", max_auth_age=300)
    return Starlette(
        routes=[
            Route("/me", me),
            Route("/transfers", transfer, methods=["POST"], middleware=[step_up]),
        ],
        middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)],
    )


async def test_step_up_middleware_on_a_route() -> None:
    """StepUpMiddleware(verifier, acr="aal2", max_auth_age=300) behind BearerAuthMiddleware:
    aal2/aal3 within 300 s pass; too weak or too old is 401 insufficient_user_authentication
    naming acr_values and max_age (RFC 9470 3); other routes take any valid token; advancing
    the verifier's clock ages the authentication."""
    tokens = TokenFactory()
    async with tokens.verifier() as verifier, serving(payments_app(verifier)) as client:
        now = tokens.clock.now

        async def post(**claims: Any) -> httpx.Response:
            return await client.post("/transfers", headers=bearer(tokens.issue("al", **claims)))

        fresh = await post(acr="aal2", auth_time=now)
        assert (fresh.status_code, fresh.json()) == (200, {"by": "al", "acr": "aal2"})
        assert (await post(acr="aal3", auth_time=now - 300)).status_code == 200
        weak = await post(acr="aal1", auth_time=now)
        assert (weak.status_code, weak.json()) == (
            401,
            {"detail": "insufficient user authentication"},
        )
        assert weak.headers["www-authenticate"] == (
            'Bearer realm="api", error="insufficient_user_authentication", '
            'error_description="A different authentication level is required", '
            'acr_values="aal2", max_age="300"'
        )
        old = await post(acr="aal2", auth_time=now - 301)
        assert old.status_code == 401
        assert (
            'error_description="More recent authentication is required"'
            in (old.headers["www-authenticate"])
        )
        plain = tokens.issue("al", acr="aal1")
        assert (await client.get("/me", headers=bearer(plain))).status_code == 200
        assert (await client.post("/transfers")).status_code == 401  # no token: the outer one

        kept = tokens.issue("al", acr="aal2", auth_time=now)
        assert (await client.post("/transfers", headers=bearer(kept))).status_code == 200
        tokens.clock.advance(301)
        assert (await client.post("/transfers", headers=bearer(kept))).status_code == 401


async def test_step_up_closes_a_websocket_and_refuses_to_run_without_claims() -> None:
    """A WebSocket handshake that falls short is closed with 1008; a request that reached
    StepUpMiddleware without verified claims (no BearerAuthMiddleware in front, a public path)
    is a LookupError, never let through; lifespan passes untouched."""
    calls: list[str] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    tokens = TokenFactory()
    verifier = Verifier(tokens.issuer, key=tokens.public_jwk, clock=tokens.clock)
    middleware = StepUpMiddleware(app, verifier, acr="aal2")
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    def websocket(acr: str) -> dict[str, Any]:
        claims = verifier.verify(tokens.issue(acr=acr))
        return {"type": "websocket", "path": "/ws", "state": {"claims": claims}}

    await middleware(websocket("aal1"), receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    await middleware(websocket("aal3"), receive, send)
    with pytest.raises(LookupError, match="BearerAuthMiddleware"):
        await middleware({"type": "http", "path": "/transfers", "headers": []}, receive, send)
    await middleware({"type": "lifespan"}, receive, send)
    assert calls == ["websocket", "lifespan"]
    assert len(sent) == 1
