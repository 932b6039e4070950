"""The bench's account on each server: register, log in, check the contract by hand."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass

import httpx
from servers import TOKENWARD_CLI, Server

EMAIL = "bench@example.com"
PASSWORD = "violet tangerine ladder 42"  # >= 15 characters and not on the blocklist


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str


def cookie_value(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    raise RuntimeError(f"no {name} cookie in the response")


def register(server: Server, email: str = EMAIL) -> None:
    body = {"email": email, "password": PASSWORD}
    response = httpx.post(server.base_url + server.api.register, json=body, timeout=30)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{server.name}: register -> {response.status_code} {response.text}")


def login(server: Server, email: str = EMAIL) -> Session:
    body = {"email": email, "password": PASSWORD}
    response = httpx.post(server.base_url + server.api.login, json=body, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"{server.name}: login -> {response.status_code} {response.text}")
    token = response.json()[server.api.token_field]
    return Session(access_token=token, refresh_token=cookie_value(response, server.api.cookie))


def _payload(token: str) -> str:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()


def check_session(server: Server, session: Session) -> None:
    """One request of each kind by hand, so that a broken contract fails before wrk runs."""
    headers = {"Authorization": f"Bearer {session.access_token}"}
    protected = httpx.get(server.base_url + server.api.protected, headers=headers, timeout=10)
    if protected.status_code != 200:
        raise RuntimeError(f"{server.name}: protected route -> {protected.status_code}")
    cookies = {server.api.cookie: session.refresh_token}
    refreshed = httpx.post(server.base_url + server.api.refresh, cookies=cookies, timeout=10)
    if refreshed.status_code != 200:
        raise RuntimeError(f"{server.name}: refresh -> {refreshed.status_code}")
    if server.is_tokenward and cookie_value(refreshed, server.api.cookie) in (
        "",
        session.refresh_token,
    ):
        raise RuntimeError(f"{server.name}: refresh did not rotate the cookie")


BENCH_ROLE = ("member", "notes:read", "notes:write")
"""tokenward's bench account holds a role granting two permissions (TOKENWARD_DEFAULT_ROLES,
servers.tokenward_env), so its tokens carry roles and scope as a deployment's would."""


def create_role(server: Server) -> None:
    name, *permissions = BENCH_ROLE
    argv = [str(TOKENWARD_CLI), "roles", "create", name]
    for permission in permissions:
        argv += ["-p", permission]
    subprocess.run(argv, env=server.env, cwd=server.cwd, check=True, capture_output=True)


def prepare(server: Server) -> None:
    """Register the bench's account (on tokenward with a role) and check the routes once."""
    if server.is_tokenward:
        create_role(server)
    register(server)
    session = login(server)
    if server.is_tokenward and '"roles"' not in _payload(session.access_token):
        raise RuntimeError(f"{server.name}: the bench account's token carries no roles")
    check_session(server, session)
