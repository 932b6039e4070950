"""The admin API's callers in tests: client credentials with scopes, their Basic header, and
the reading of its problem answers.

Imported as ``support.admin`` by the admin API and admin client tests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from tokenward.app.resource_servers import ClientService
from tokenward.core.scopes import AdminScope

__all__ = [
    "ALL_SCOPES",
    "PROBLEM_TYPE",
    "AdminCaller",
    "admin_client",
    "basic",
    "events_of",
    "is_problem",
    "leaked",
]

PROBLEM_TYPE = "urn:tokenward:problem:"
ALL_SCOPES = tuple(scope.value for scope in AdminScope)


def basic(client_id: str, secret: str) -> dict[str, str]:
    """The ``Authorization`` header of client credentials (RFC 6749 2.3.1: each part
    form-urlencoded, then base64)."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}


@dataclass
class AdminCaller:
    """An admin client's credentials and the in-process HTTP client it calls through."""

    http: httpx.AsyncClient
    client_id: str
    secret: str
    scopes: tuple[str, ...]

    @property
    def headers(self) -> dict[str, str]:
        return basic(self.client_id, self.secret)

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kw)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kw)


async def admin_client(
    service: Any, http: httpx.AsyncClient, *scopes: str, name: str = "back-office"
) -> AdminCaller:
    """New client credentials holding exactly ``scopes`` (none: a resource server), made as
    ``tokenward clients create NAME --scope ...`` makes them."""
    client, secret = await ClientService(service).create(name, scopes)
    return AdminCaller(http, client.id, secret, tuple(scopes))


def is_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is tokenward's problem+json ``code`` with ``status``; its body."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_TYPE + code, body
    assert body["status"] == status
    return body


async def events_of(service: Any, *, limit: int = 5000) -> list[Any]:
    """Every event in the store, newest first (role events belong to no user)."""
    async with service.store.read() as tx:
        return list(await tx.events(limit=limit))


def leaked(events: Iterable[Any], secrets: Iterable[str]) -> list[tuple[str, str]]:
    """(event type, secret) for each secret that appears in some event's detail."""
    found = []
    for event in events:
        text = json.dumps(event.detail or {}, ensure_ascii=False).lower()
        found += [(event.type, s) for s in secrets if s and s.lower() in text]
    return found
