"""POST /auth/token: RFC 6749 password and refresh_token grants for clients without cookies."""

from __future__ import annotations

from typing import Any

import pytest
from support import PASSWORD, Api, FakeClock


async def token(api: Api, **form: str) -> Any:
    return await api.http.post("/auth/token", data=form)


async def test_password_grant_returns_the_refresh_token_in_the_body(api: Api) -> None:
    """Form-encoded, username = email; no cookie, and no-store caching."""
    await api.register("ada@example.com")
    response = await token(
        api, grant_type="password", username="Ada@example.com", password=PASSWORD
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"].startswith("twr_")
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers
    assert (await api.me(body["access_token"])).status_code == 200


async def test_refresh_grant_rotates_with_the_same_rules(api: Api, clock: FakeClock) -> None:
    """Rotation, the reuse interval and reuse detection work through the form endpoint too."""
    await api.register("ada@example.com")
    first = (
        await token(api, grant_type="password", username="ada@example.com", password=PASSWORD)
    ).json()
    rotated = await token(api, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert rotated.status_code == 200
    again = await token(api, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert again.json()["refresh_token"] == rotated.json()["refresh_token"]
    clock.advance(30)
    stolen = await token(api, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert stolen.status_code == 400
    assert stolen.json() == {
        "error": "invalid_grant",
        "error_description": "the refresh token is invalid, expired or revoked",
    }
    newest = await token(
        api, grant_type="refresh_token", refresh_token=rotated.json()["refresh_token"]
    )
    assert newest.json()["error"] == "invalid_grant"


async def test_the_cookie_and_form_flows_share_sessions(api: Api) -> None:
    """A refresh token from /auth/token also works as the cookie, and the reverse."""
    await api.register("ada@example.com")
    body = (
        await token(api, grant_type="password", username="ada@example.com", password=PASSWORD)
    ).json()
    assert (await api.refresh(body["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "invalid_request"),
        ({"grant_type": "password", "username": "ada@example.com"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        (
            {
                "grant_type": "password",
                "username": "ada@example.com",
                "password": "wrong password!!",
            },
            "invalid_grant",
        ),
        (
            {"grant_type": "password", "username": "nobody@example.com", "password": PASSWORD},
            "invalid_grant",
        ),
        ({"grant_type": "refresh_token", "refresh_token": "twr_nonsense"}, "invalid_grant"),
    ],
)
async def test_errors_have_the_rfc_6749_shape(api: Api, form: dict[str, str], error: str) -> None:
    """Section 5.2: 400 with error and error_description, never problem+json, never a token."""
    await api.register("ada@example.com")
    response = await token(api, **form)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert set(response.json()) == {"error", "error_description"}
    assert response.json()["error"] == error
    assert PASSWORD not in response.text


async def test_json_body_is_not_a_grant(api: Api) -> None:
    """The endpoint is form-encoded (RFC 6749 4.3.2); JSON gets invalid_request."""
    response = await api.http.post("/auth/token", json={"grant_type": "password"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_openapi_declares_the_password_flow_for_the_docs_authorize_button(api: Api) -> None:
    """FastAPI's docs page offers "Authorize" through /auth/token."""
    spec = (await api.http.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    [scheme] = [s for s in schemes.values() if s["type"] == "oauth2"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/auth/token"
    assert spec["paths"]["/auth/me"]["get"]["security"]
    # The admin API takes client credentials (HTTP Basic), never a user's token.
    [basic] = [name for name, s in schemes.items() if s == {**s, "type": "http", "scheme": "basic"}]
    assert spec["paths"]["/admin/users"]["get"]["security"] == [{basic: []}]
