"""RFC 7662 introspection, RFC 7009 revocation, the revocation feed, RFC 8414 metadata."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from support import Api, FakeClock, refresh_cookie

from tokenward.app.resource_servers import ClientService

TOKENWARD = str(Path(sys.executable).parent / "tokenward")


@pytest.fixture
async def client_id_and_secret(service: Any) -> tuple[str, str]:
    client, secret = await ClientService(service).create("orders-api")
    return client.id, secret


@pytest.fixture
def credentials(client_id_and_secret: tuple[str, str]) -> httpx.BasicAuth:
    return httpx.BasicAuth(*client_id_and_secret)


async def introspect(api: Api, auth: Any, token: str, **extra: str) -> httpx.Response:
    return await api.http.post("/auth/introspect", data={"token": token, **extra}, auth=auth)


async def test_introspection_of_live_and_dead_tokens(api: Api, credentials: Any) -> None:
    access, refresh = await api.signed_up()
    answer = (await introspect(api, credentials, access)).json()
    assert answer["active"] is True
    assert answer["token_type"] == "Bearer"  # RFC 7662 2.2: the RFC 6749 token type
    assert answer["username"] == "ada@example.com"
    assert answer["sid"] == jwt.decode(access, options={"verify_signature": False})["sid"]
    refresh_answer = (
        await introspect(api, credentials, refresh, token_type_hint="refresh_token")
    ).json()
    assert refresh_answer["active"] is True
    assert refresh_answer["token_type"] == "refresh_token"
    assert refresh_answer["sub"] == answer["sub"]
    for junk in ("garbage", "", "twr_" + "A" * 76):
        assert (await introspect(api, credentials, junk)).json() == {"active": False}
    await api.logout(refresh)
    assert (await introspect(api, credentials, access)).json() == {"active": False}
    assert (await introspect(api, credentials, refresh)).json() == {"active": False}


async def test_a_rotated_out_refresh_token_is_inactive(api: Api, credentials: Any) -> None:
    _, refresh = await api.signed_up()
    newer = refresh_cookie(await api.refresh(refresh))
    assert (await introspect(api, credentials, refresh)).json() == {"active": False}
    assert (await introspect(api, credentials, newer)).json()["active"] is True


@pytest.mark.parametrize(
    "auth",
    [None, httpx.BasicAuth("twc_nope", "secret"), "wrong-secret", "Bearer abc", "Basic !!!"],
)
async def test_client_authentication_is_required(
    api: Api, client_id_and_secret: tuple[str, str], auth: Any
) -> None:
    """invalid_client, 401, a Basic challenge; nothing about the token is revealed."""
    access, _ = await api.signed_up()
    headers = {}
    if auth == "wrong-secret":
        auth = httpx.BasicAuth(client_id_and_secret[0], "wrong")
    elif isinstance(auth, str):
        headers, auth = {"Authorization": auth}, None
    for method, path, kw in (
        ("POST", "/auth/introspect", {"data": {"token": access}}),
        ("POST", "/auth/revoke", {"data": {"token": access}}),
        ("GET", "/auth/revocations", {}),
    ):
        response = await api.http.request(method, path, auth=auth, headers=headers, **kw)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"] == 'Basic realm="tokenward"'
    assert (await api.me(access)).status_code == 200


async def test_revoking_a_refresh_token_ends_the_session(api: Api, credentials: Any) -> None:
    access, refresh = await api.signed_up()
    response = await api.http.post("/auth/revoke", data={"token": refresh}, auth=credentials)
    assert response.status_code == 200
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.me(access)).status_code == 401


async def test_revoking_an_access_token_ends_its_session(api: Api, credentials: Any) -> None:
    access, refresh = await api.signed_up()
    response = await api.http.post(
        "/auth/revoke", data={"token": access, "token_type_hint": "access_token"}, auth=credentials
    )
    assert response.status_code == 200
    assert (await api.me(access)).status_code == 401
    assert (await api.refresh(refresh)).status_code == 401


async def test_revoking_an_unknown_token_is_200(api: Api, credentials: Any) -> None:
    """RFC 7009 2.2: invalid tokens do not cause an error."""
    response = await api.http.post("/auth/revoke", data={"token": "nonsense"}, auth=credentials)
    assert response.status_code == 200


async def test_the_revocation_feed_lists_ended_sessions_once(
    api: Api, credentials: Any, clock: FakeClock
) -> None:
    """Logout, logout-all and reuse detection all reach the feed; the cursor pages forward."""
    access_a, refresh_a = await api.signed_up()
    access_b, _ = await api.signed_up("grace@example.com")
    first = (await api.http.get("/auth/revocations", auth=credentials)).json()
    assert first["revoked"] == []
    assert first["poll_interval"] >= 1
    await api.logout(refresh_a)
    await api.http.post("/auth/logout-all", headers={"Authorization": f"Bearer {access_b}"})
    clock.advance(2)  # the feed lags one second behind, for transactions still committing
    page = (
        await api.http.get("/auth/revocations", params={"after": first["cursor"]}, auth=credentials)
    ).json()
    sid = lambda token: jwt.decode(token, options={"verify_signature": False})["sid"]  # noqa: E731
    assert {r["sid"] for r in page["revoked"]} == {sid(access_a), sid(access_b)}
    again = (
        await api.http.get("/auth/revocations", params={"after": page["cursor"]}, auth=credentials)
    ).json()
    assert again["revoked"] == []
    # Past the access-token lifetime the feed forgets: those tokens have expired anyway.
    clock.advance(16 * 60)
    fresh = (await api.http.get("/auth/revocations", auth=credentials)).json()
    assert fresh["revoked"] == []


async def test_a_bad_cursor_is_400(api: Api, credentials: Any) -> None:
    response = await api.http.get("/auth/revocations", params={"after": "x" * 50}, auth=credentials)
    assert response.status_code == 400


async def test_server_metadata(api: Api) -> None:
    """RFC 8414: issuer and endpoints for clients that discover them."""
    body = (await api.http.get("/.well-known/oauth-authorization-server")).json()
    assert body["issuer"] == "http://127.0.0.1:8000"
    assert body["jwks_uri"] == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert body["token_endpoint"].endswith("/auth/token")
    assert body["introspection_endpoint"].endswith("/auth/introspect")
    assert body["revocation_endpoint"].endswith("/auth/revoke")
    assert set(body["grant_types_supported"]) == {"password", "refresh_token"}


def test_clients_cli(tmp_path: Path) -> None:
    env = {**os.environ, "TOKENWARD_DATA_DIR": str(tmp_path / "data")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TOKENWARD, "clients", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    created = run("create", "orders-api")
    assert created.returncode == 0, created.stderr
    client_id_line, secret_line = created.stdout.splitlines()
    client_id = client_id_line.removeprefix("client_id=")
    secret = secret_line.removeprefix("client_secret=")
    assert client_id.startswith("twc_")
    assert len(secret) >= 40
    listing = run("list").stdout
    assert client_id in listing
    assert secret not in listing
    assert run("delete", client_id).stdout.strip() == f"deleted client {client_id}"
    missing = run("delete", client_id)
    assert missing.returncode == 1
    assert run("list").stdout.strip() == "0 clients"
