"""End to end against a real `tokenward serve` process on loopback, across a restart."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
from support import PASSWORD, free_port, serving


def test_walkthrough_and_restart_keep_users_sessions_and_key(tmp_path: Path) -> None:
    """The README's flow over real HTTP; after a restart the refresh cookie and key survive."""
    data_dir = tmp_path / "data"
    port = free_port()  # the same address after the restart: the default issuer follows it
    with serving(data_dir, port) as (base, log), httpx.Client(base_url=base) as client:
        email = "ada@example.com"
        assert (
            client.post("/auth/register", json={"email": email, "password": PASSWORD}).status_code
            == 201
        )
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200
        access = login.json()["access_token"]
        assert (
            client.get("/auth/me", headers={"Authorization": f"Bearer {access}"}).status_code == 200
        )
        refreshed = client.post("/auth/refresh")  # the client's cookie jar sends tw_refresh
        assert refreshed.status_code == 200
        refresh_token = client.cookies["tw_refresh"]
        kid = client.get("/.well-known/jwks.json").json()["keys"][0]["kid"]

    server_log = log.read_text()
    assert PASSWORD not in server_log
    assert refresh_token not in server_log
    assert access not in server_log
    if "TOKENWARD_DATABASE_URL" not in os.environ:  # the default: SQLite and a secret file
        # The server secret (signing keys are encrypted under it in the database) is private.
        secret_file = data_dir / "keys" / "secret.key"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((data_dir / "keys").stat().st_mode) == 0o700
        database = (data_dir / "tokenward.db").read_bytes()
        assert b"PRIVATE KEY" not in database

    with serving(data_dir, port) as (base, _), httpx.Client(base_url=base) as client:
        assert client.get("/.well-known/jwks.json").json()["keys"][0]["kid"] == kid
        # The access token signed before the restart still verifies: same key.
        assert (
            client.get("/auth/me", headers={"Authorization": f"Bearer {access}"}).status_code == 200
        )
        refreshed = client.post("/auth/refresh", headers={"Cookie": f"tw_refresh={refresh_token}"})
        assert refreshed.status_code == 200
        again = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert again.status_code == 200
        logout = client.post("/auth/logout", headers={"Cookie": f"tw_refresh={refresh_token}"})
        assert logout.status_code == 204


def test_production_cookie_is_secure_and_prefixed(tmp_path: Path) -> None:
    """TOKENWARD_ENV=production: Secure cookie with the __Secure- prefix."""
    env = {"TOKENWARD_ENV": "production", "TOKENWARD_ISSUER": "https://auth.example"}
    with serving(tmp_path / "data", **env) as (base, _), httpx.Client(base_url=base) as client:
        client.post("/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
        login = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("__Secure-tw_refresh=twr_")
        assert "; Secure" in cookie
        assert "HttpOnly" in cookie


def test_forwarded_headers_from_loopback_are_not_believed_by_default(tmp_path: Path) -> None:
    """No proxy is trusted by default, loopback included (uvicorn's own handling is off)."""
    with serving(tmp_path / "data") as (base, _), httpx.Client(base_url=base) as client:
        client.post("/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
        login = client.post(
            "/auth/login",
            json={"email": "ada@example.com", "password": PASSWORD},
            headers={
                "X-Forwarded-For": "1.2.3.4",
                "X-Real-IP": "1.2.3.4",
                "Forwarded": "for=1.2.3.4",
            },
        )
        access = login.json()["access_token"]
        sessions = client.get("/auth/sessions", headers={"Authorization": f"Bearer {access}"})
        assert [s["ip"] for s in sessions.json()["sessions"]] == ["127.0.0.1"]


def test_trusted_loopback_proxy_passes_the_client_address(tmp_path: Path) -> None:
    env = {"TOKENWARD_TRUSTED_PROXIES": "127.0.0.1"}
    with serving(tmp_path / "data", **env) as (base, _), httpx.Client(base_url=base) as client:
        client.post("/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
        login = client.post(
            "/auth/login",
            json={"email": "ada@example.com", "password": PASSWORD},
            headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.9"},
        )
        access = login.json()["access_token"]
        sessions = client.get("/auth/sessions", headers={"Authorization": f"Bearer {access}"})
        assert [s["ip"] for s in sessions.json()["sessions"]] == ["198.51.100.9"]
