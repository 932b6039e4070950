"""`tokenward serve`: the default issuer is the address served, in every worker."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import PASSWORD, free_port, serving

from tokenward.cli import served_issuer


def claims(token: str) -> dict[str, Any]:
    """The JWT payload, unverified (the issuer is what is looked at)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def issuers_seen(base: str, logins: int = 1) -> tuple[set[str], str]:
    """The `iss` of the tokens of `logins` logins, and the issuer of the metadata document."""
    with httpx.Client(base_url=base, timeout=30) as client:
        email = "ada@example.com"
        register = client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert register.status_code == 201, register.text
        seen = set()
        for _ in range(logins):
            login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            seen.add(claims(login.json()["access_token"])["iss"])
        metadata = client.get("/.well-known/oauth-authorization-server").json()
        assert metadata["jwks_uri"] == f"{metadata['issuer']}/.well-known/jwks.json"
        return seen, metadata["issuer"]


def test_the_default_issuer_follows_the_port_served(tmp_path: Path) -> None:
    """`serve --port N` without TOKENWARD_ISSUER signs tokens for http://127.0.0.1:N."""
    port = free_port()
    with serving(tmp_path / "data", port) as (base, _):
        assert base == f"http://127.0.0.1:{port}"
        seen, advertised = issuers_seen(base)
    assert seen == {advertised} == {base}


def test_every_worker_gets_the_served_issuer(tmp_path: Path) -> None:
    """With --workers 2, the spawned workers build their settings alone: same issuer."""
    port = free_port()
    with serving(tmp_path / "data", port, args=["--workers", "2"]) as (base, _):
        seen, advertised = issuers_seen(base, logins=6)
    assert seen == {advertised} == {f"http://127.0.0.1:{port}"}


def test_an_explicit_issuer_wins(tmp_path: Path) -> None:
    env = {"TOKENWARD_ISSUER": "http://auth.localtest.example:9999"}
    with serving(tmp_path / "data", **env) as (base, _):
        seen, advertised = issuers_seen(base)
    assert seen == {advertised} == {"http://auth.localtest.example:9999"}


def test_an_issuer_in_dotenv_wins(tmp_path: Path) -> None:
    """.env counts as set (serve runs in tmp_path: the hermetic fixture's cwd)."""
    (tmp_path / ".env").write_text("TOKENWARD_ISSUER=http://from-dotenv.example:7000\n")
    with serving(tmp_path / "data") as (base, _):
        seen, advertised = issuers_seen(base)
    assert seen == {advertised} == {"http://from-dotenv.example:7000"}


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("host", "port", "issuer"),
    [
        ("127.0.0.1", 8010, "http://127.0.0.1:8010"),
        ("localhost", 8000, "http://localhost:8000"),
        ("192.0.2.5", 80, "http://192.0.2.5:80"),
        ("::1", 8010, "http://[::1]:8010"),
        ("fe80::1%eth0", 8010, "http://[fe80::1%25eth0]:8010"),
        ("0.0.0.0", 8010, "http://127.0.0.1:8010"),  # noqa: S104 (not a bind: the mapping)
        ("::", 8010, "http://[::1]:8010"),
        ("", 8010, "http://127.0.0.1:8010"),
    ],
)
def test_served_issuer(host: str, port: int, issuer: str) -> None:
    """IPv6 literals are bracketed; a wildcard bind becomes the loopback of its family."""
    assert served_issuer(host, port) == issuer
