"""The bench's account on each server: register, log in, check the contract by hand."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from servers import Server

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


def prepare(server: Server) -> None:
    """Register the bench's account and check the routes once."""
    register(server)
    check_session(server, login(server))
