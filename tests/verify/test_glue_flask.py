"""examples/flask_app.py through Flask's test client, keys from a real tokenward."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from tokenward.testing import TokenFactory
from tokenward.verify import Verifier
from tokenward.verify.flask import current_claims, require_token

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
    load_example,
    role_path,
)
from .test_glue_fastapi import bearer
from .test_verifier_server import flip_signature_byte

EXAMPLE = load_example("flask_app")
FORGER = Forger()


@pytest.fixture
def api(tokenward: Tokenward) -> Iterator[Any]:
    with Verifier(tokenward.issuer) as verifier:
        yield EXAMPLE.create_app(verifier).test_client()


def test_a_real_token_puts_the_claims_in_g(api: Any, alice: Login) -> None:
    """@require_token(verifier): the view sees g.claims of tokenward's token."""
    response = api.get("/me", headers=bearer(alice.access_token))
    assert response.status_code == 200
    assert response.get_json() == {"sub": alice.claims["sub"], "sid": alice.claims["sid"]}


def test_refusals(api: Any, alice: Login) -> None:
    """401 without error for no credentials, invalid_token for a bad one, 403 for no scope."""
    missing = api.get("/me")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    tampered = flip_signature_byte(alice.access_token)
    refused = api.get("/me", headers=bearer(tampered))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    assert tampered not in refused.get_data(as_text=True)
    forbidden = api.get("/notes", headers=bearer(alice.access_token))
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
    assert api.get("/healthz").get_json() == {"ok": True, "verifier_ready": True}


@pytest.mark.parametrize(
    ("method", "claims", "status"),
    [
        ("GET", {"scope": "notes:read"}, 200),
        ("GET", {}, 403),
        ("DELETE", {"roles": ["admin"]}, 200),
        ("DELETE", {"roles": []}, 403),
    ],
)
def test_scopes_and_roles(method: str, claims: dict[str, Any], status: int) -> None:
    """scopes= and roles= of require_token let through exactly the tokens holding them."""
    verifier = Verifier(ISSUER, key=FORGER.key.public_key(), clock=FakeClock(wall=NOW))
    client = EXAMPLE.create_app(verifier).test_client()
    token = FORGER.sign(claims=FORGER.claims(**claims))
    assert client.open("/notes", method=method, headers=bearer(token)).status_code == status


@pytest.mark.parametrize("claims", [{}, {"roles": ["editor"], "scope": "notes:read admin"}])
def test_a_missing_role_is_403_missing_role_not_a_scope(claims: dict[str, Any]) -> None:
    """Issue 13: as in the FastAPI glue, a missing role is "missing role", not a scope."""
    verifier = Verifier(ISSUER, key=FORGER.key.public_key(), clock=FakeClock(wall=NOW))
    client = EXAMPLE.create_app(verifier).test_client()
    response = client.delete("/notes", headers=bearer(FORGER.sign(claims=FORGER.claims(**claims))))
    assert response.status_code == 403
    assert response.get_json() == {"detail": "missing role"}
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", error_description="missing role"'
    )


def test_a_missing_scope_is_named_before_a_missing_role() -> None:
    """scopes= and roles= together: a token lacking both is told the scope it needs."""
    app = Flask(__name__)
    verifier = Verifier(ISSUER, key=FORGER.key.public_key(), clock=FakeClock(wall=NOW))

    @app.get("/both")
    @require_token(verifier, scopes=["notes:read"], roles=["admin"])
    def both() -> str:
        return "ok"

    client = app.test_client()
    lacking_both = client.get("/both", headers=bearer(FORGER.sign()))
    assert lacking_both.status_code == 403
    assert lacking_both.get_json() == {"detail": "insufficient scope"}
    assert 'scope="notes:read"' in lacking_both.headers["WWW-Authenticate"]
    scoped = FORGER.sign(claims=FORGER.claims(scope="notes:read"))
    lacking_role = client.get("/both", headers=bearer(scoped))
    assert lacking_role.get_json() == {"detail": "missing role"}
    assert "scope=" not in lacking_role.headers["WWW-Authenticate"]
    admin = FORGER.sign(claims=FORGER.claims(scope="notes:read", roles=["admin"]))
    assert client.get("/both", headers=bearer(admin)).get_data(as_text=True) == "ok"


def test_current_claims_outside_a_guarded_view() -> None:
    """current_claims() in an unguarded view is a LookupError, never someone else's claims."""
    app = Flask(__name__)
    verifier = Verifier(ISSUER, key=FORGER.key.public_key(), clock=FakeClock(wall=NOW))

    @app.get("/open")
    def open_view() -> str:
        try:
            current_claims()
        except LookupError:
            return "none"
        return "some"

    @app.get("/guarded")
    @require_token(verifier)
    def guarded() -> str:
        return current_claims().sub

    client = app.test_client()
    assert client.get("/open").get_data(as_text=True) == "none"
    assert client.get("/guarded", headers=bearer(FORGER.sign())).get_data(as_text=True) == "user-1"


def test_step_up_with_require_token() -> None:
    """Issue 17: require_token(verifier, scopes=[...], acr="aal2", max_auth_age=300), tokens
    minted by tokenward.testing. aal2 or aal3 authenticated within 300 s pass; too weak or too
    old is 401 insufficient_user_authentication with acr_values and max_age (RFC 9470 3);
    a missing scope is still 403 first; advancing the clock ages the authentication."""
    app = Flask(__name__)
    tokens = TokenFactory()
    with tokens.verifier() as verifier:

        @app.post("/transfers")
        @require_token(verifier, scopes=["payments:write"], acr="aal2", max_auth_age=300)
        def transfer() -> dict[str, Any]:
            return {"by": current_claims().sub, "acr": current_claims().acr}

        client = app.test_client()

        def post(**claims: Any) -> Any:
            token = tokens.issue("alice", **{"scope": "payments:write", **claims})
            return client.post("/transfers", headers=bearer(token))

        now = tokens.clock.now
        fresh = post(acr="aal2", auth_time=now)
        assert (fresh.status_code, fresh.get_json()) == (200, {"by": "alice", "acr": "aal2"})
        assert post(acr="aal3", auth_time=now - 300).status_code == 200
        weak = post(acr="aal1", auth_time=now)
        assert (weak.status_code, weak.get_json()) == (
            401,
            {"detail": "insufficient user authentication"},
        )
        assert weak.headers["WWW-Authenticate"] == (
            'Bearer realm="api", error="insufficient_user_authentication", '
            'error_description="A different authentication level is required", '
            'acr_values="aal2", max_age="300"'
        )
        old = post(acr="aal2", auth_time=now - 301)
        assert old.status_code == 401
        assert (
            'error_description="More recent authentication is required"'
            in (old.headers["WWW-Authenticate"])
        )
        assert post(acr="aal2").status_code == 401  # no auth_time
        assert post(acr="aal1", scope=None).status_code == 403  # the scope first

        kept = tokens.issue("alice", scope="payments:write", acr="aal2", auth_time=now)
        assert client.post("/transfers", headers=bearer(kept)).status_code == 200
        tokens.clock.advance(301)
        assert client.post("/transfers", headers=bearer(kept)).status_code == 401


def test_roles_from_the_admin_api_open_the_views_and_end_sessions_closes_them_within_the_bound(
    tokenward: Tokenward,
) -> None:
    """scopes= and roles= of require_token against tokenward's tokens: 403 before the grant,
    200 after grant + refresh. Revoking admin with end_sessions=true: the example's (sync)
    verifier, following the real revocation feed, refuses the old token (still saying admin)
    with 401 within its bound, the refresh token is dead, and a new sign-in reads the notes
    (still a reader) but may not purge them."""
    example_roles(tokenward)
    user = tokenward.login()
    with feed_verifier(tokenward) as verifier:
        notes = EXAMPLE.create_app(verifier).test_client()
        assert notes.get("/notes", headers=bearer(user.access_token)).status_code == 403
        assert notes.delete("/notes", headers=bearer(user.access_token)).status_code == 403

        for role in (READER, ADMIN):
            assert tokenward.admin("PUT", role_path(user, role)).status_code == 204
        assert notes.get("/notes", headers=bearer(user.access_token)).status_code == 403
        user = tokenward.refresh(user)
        assert notes.get("/notes", headers=bearer(user.access_token)).status_code == 200
        purged = notes.delete("/notes", headers=bearer(user.access_token))
        assert purged.get_json() == {"purged_by": user.claims["sub"]}

        revoked = tokenward.admin("DELETE", role_path(user, ADMIN), end_sessions="true")
        assert revoked.status_code == 204
        returned = time.monotonic()
        while (
            response := notes.delete("/notes", headers=bearer(user.access_token))
        ).status_code == 200:
            assert time.monotonic() - returned <= REVOCATION_BOUND, "still accepted past the bound"
            time.sleep(0.05)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        assert tokenward.refresh_status(user) == 401

        again = tokenward.login(user.email)
        assert (again.claims["roles"], again.claims["scope"]) == ([READER], "notes:read")
        assert notes.get("/notes", headers=bearer(again.access_token)).status_code == 200
        refused = notes.delete("/notes", headers=bearer(again.access_token))
        assert (refused.status_code, refused.get_json()) == (403, {"detail": "missing role"})
