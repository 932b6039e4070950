"""The HTTP contract of register, login, refresh, logout, /auth/me, JWKS and health."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from sqlalchemy import func, select
from support import COOKIE, PASSWORD, Api, refresh_cookie, without_request_id

from tokenward.storage import SessionRow, UserRow

PROBLEM = "application/problem+json"


async def count(service: Any, model: Any) -> int:
    async with service.db.read() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def test_register_returns_the_normalised_user(api: Api) -> None:
    """Email is trimmed, NFKC-normalised and lower-cased; the password is never echoed."""
    response = await api.register("  \uff21da@Example.COM ")  # fullwidth A: NFKC makes it A
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert set(body) == {
        "id",
        "email",
        "created_at",
        "email_verified",
        "roles",
        "scope",
        "app_metadata",
        "user_metadata",
    }
    assert body["email_verified"] is False
    assert PASSWORD not in response.text


@pytest.mark.parametrize("variant", ["ada@example.com", "ADA@example.com", " ada@EXAMPLE.com\t"])
async def test_duplicate_email_is_409_whatever_its_case(
    api: Api, service: Any, variant: str
) -> None:
    """An email differing only in case or surrounding space is the same account."""
    assert (await api.register("ada@example.com")).status_code == 201
    response = await api.register(variant, "another long passphrase 99")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:tokenward:problem:email-taken"
    assert await count(service, UserRow) == 1


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short pass 1", "password_too_short"),
        ("x" * 129, "password_too_long"),
        ("passwordpassword", "password_common"),
        ("123456789012345", "password_common"),
        ("aaaaaaaaaaaaaaaaaaaa", "password_common"),
        ("ada@example.com", "password_matches_email"),
    ],
)
async def test_weak_password_is_422_naming_the_rule(
    api: Api, service: Any, password: str, rule: str
) -> None:
    """The policy names the broken rule and nothing is created."""
    response = await api.register("ada@example.com", password)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["rule"] == rule
    assert password not in response.text
    assert await count(service, UserRow) == 0


async def test_long_passphrase_without_composition_rules_is_accepted(api: Api) -> None:
    """No composition rules: lower-case words and spaces of 15+ characters are fine, up to 128."""
    assert (await api.register("a@example.com", "correct staple horse")).status_code == 201
    assert (await api.register("b@example.com", "ünïcödé wörds ✓ " * 8)).status_code == 201


@pytest.mark.parametrize("email", ["not-an-email", "", "a@", "@b.com", "a" * 250 + "@x.com"])
async def test_invalid_email_is_422(api: Api, service: Any, email: str) -> None:
    """An address that is not one is refused with the rule named."""
    response = await api.register(email)
    assert response.status_code == 422
    assert response.json()["rule"] == "email_invalid"
    assert await count(service, UserRow) == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "a@example.com"}, {"email": 1, "password": PASSWORD}, [1, 2], "text"],
)
async def test_malformed_body_is_422_problem_without_echo(api: Api, body: Any) -> None:
    """Schema errors are problem+json and never echo the submitted values."""
    response = await api.http.post("/auth/register", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert PASSWORD not in response.text


async def test_login_sets_a_strict_httponly_cookie_scoped_to_auth(api: Api) -> None:
    """The refresh token only ever travels as an HttpOnly, SameSite=Strict cookie on /auth."""
    await api.register("ada@example.com")
    response = await api.login("ADA@example.com ")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert response.headers["cache-control"] == "no-store"
    [cookie] = response.headers.get_list("set-cookie")
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert "httponly" in attributes
    assert attributes["samesite"].strip().lower() == "samesite=strict"
    assert attributes["path"].strip() == "Path=/auth"
    assert attributes["max-age"].strip() == f"Max-Age={7 * 86400}"
    assert "secure" not in attributes  # development: plain http on localhost works
    assert refresh_cookie(response) not in response.text


async def test_access_token_claims(api: Api, service: Any) -> None:
    """RFC 9068 shape: typ at+jwt, kid, and iss/sub/iat/exp/jti/sid."""
    access, _ = await api.signed_up()
    header = jwt.get_unverified_header(access)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] == service.signing_keys.signing_key.kid
    claims = jwt.decode(access, options={"verify_signature": False})
    assert set(claims) == {"iss", "sub", "iat", "exp", "jti", "sid", "amr", "acr", "auth_time"}
    # How the session was authenticated (RFC 8176, RFC 9470): a password, just now.
    assert (claims["amr"], claims["acr"]) == (["pwd"], "aal1")
    assert claims["auth_time"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iss"] == "http://127.0.0.1:8000"


@pytest.mark.parametrize("settings_overrides", [{"audience": "api://orders"}])
async def test_audience_is_set_when_configured(api: Api) -> None:
    """With TOKENWARD_AUDIENCE the token carries aud and /auth/me accepts it."""
    access, _ = await api.signed_up()
    assert jwt.decode(access, options={"verify_signature": False})["aud"] == "api://orders"
    assert (await api.me(access)).status_code == 200


async def test_unknown_email_and_wrong_password_answer_alike(api: Api, service: Any) -> None:
    """Both are 401 with the same body: no account enumeration."""
    await api.register("ada@example.com")
    wrong = await api.login("ada@example.com", "not the right password at all")
    unknown = await api.login("nobody@example.com")
    invalid = await api.login("not an email")
    assert wrong.status_code == unknown.status_code == invalid.status_code == 401
    assert without_request_id(wrong) == without_request_id(unknown) == without_request_id(invalid)
    assert wrong.headers["content-type"] == PROBLEM
    assert "set-cookie" not in wrong.headers
    assert await count(service, SessionRow) == 0


async def test_me_returns_the_user(api: Api) -> None:
    """The tutorial's protected route, with the access token as a Bearer header."""
    access, _ = await api.signed_up("grace@example.com")
    response = await api.me(access)
    assert response.status_code == 200
    assert response.json()["email"] == "grace@example.com"


async def test_refresh_issues_new_tokens_and_rotates_the_cookie(api: Api) -> None:
    """Every refresh gives a new access token and a new refresh token."""
    access, refresh = await api.signed_up()
    response = await api.refresh(refresh)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    new_refresh = refresh_cookie(response)
    assert new_refresh != refresh
    new_access = response.json()["access_token"]
    assert new_access != access
    assert (await api.me(new_access)).status_code == 200
    # The chain goes on.
    assert (await api.refresh(new_refresh)).status_code == 200


@pytest.mark.parametrize(
    "token",
    [None, "", "garbage", "twr_" + "A" * 76, "twr_" + "A" * 75 + "!", "x" * 5000],
)
async def test_refresh_without_a_valid_cookie_is_401(api: Api, service: Any, token: Any) -> None:
    """Missing, unknown or malformed refresh cookies are refused and clear the cookie."""
    await api.signed_up()
    response = await api.refresh(token)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:tokenward:problem:invalid-token"
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    async with service.db.read() as db:
        [session] = (await db.execute(select(SessionRow))).scalars()
    assert session.generation == 0


async def test_refresh_token_with_a_forged_mac_is_401(api: Api) -> None:
    """Changing one character of a real token breaks its MAC."""
    _, refresh = await api.signed_up()
    forged = refresh[:-2] + ("AA" if refresh[-2:] != "AA" else "BB")
    assert (await api.refresh(forged)).status_code == 401
    assert (await api.refresh(refresh)).status_code == 200


async def test_logout_revokes_the_session_server_side(api: Api, service: Any) -> None:
    """After logout the refresh token and the access token both stop working."""
    access, refresh = await api.signed_up()
    response = await api.logout(refresh)
    assert response.status_code == 204
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.me(access)).status_code == 401
    async with service.db.read() as db:
        [session] = (await db.execute(select(SessionRow))).scalars()
    assert session.revoked_reason == "logout"


async def test_logout_without_a_session_is_still_204(api: Api) -> None:
    """Logout is idempotent: no cookie, a bad cookie or a second logout all answer 204."""
    _, refresh = await api.signed_up()
    assert (await api.logout(None)).status_code == 204
    assert (await api.logout("garbage")).status_code == 204
    assert (await api.logout(refresh)).status_code == 204
    assert (await api.logout(refresh)).status_code == 204


async def test_two_logins_are_two_independent_sessions(api: Api) -> None:
    """Logging out one session leaves the other able to refresh."""
    _, first = await api.signed_up()
    second = refresh_cookie(await api.login("ada@example.com"))
    await api.logout(first)
    assert (await api.refresh(second)).status_code == 200


async def test_jwks_publishes_the_public_key_only(api: Api, service: Any) -> None:
    """Other services verify tokens from the JWKS alone; no private member is published."""
    response = await api.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert key["kid"] == service.signing_keys.signing_key.kid
    assert key["alg"] == "ES256"
    assert key["use"] == "sig"
    assert key["kty"] == "EC"
    assert "d" not in key
    access, _ = await api.signed_up()
    public = jwt.PyJWK(key).key
    claims = jwt.decode(access, public, algorithms=["ES256"], issuer="http://127.0.0.1:8000")
    assert claims["sub"]


async def test_healthz(api: Api) -> None:
    response = await api.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_unknown_route_is_a_problem(api: Api) -> None:
    response = await api.http.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
