"""Roles as operators and back offices change them, and what tokens and resource servers then
see: the admin API with client credentials, a token's payload, and a resource server's
Verifier fed by the in-process app (keys and revocation feed) on the test's clock."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from support.app import FakeClock
from tokenward.app.resource_servers import ClientService
from tokenward.verify import RevokedTokenError, Verifier

__all__ = ["AdminApi", "bearer", "payload", "refused_within", "resource_server"]

REVOCATION_BOUND = 2.0
"""The resource servers' revocation_bound in these tests (seconds)."""


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def payload(token: str) -> dict[str, Any]:
    """A JWT's claims as issued (unverified: what a resource server will read)."""
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


class AdminApi:
    """The admin API (``/admin/*``) as a back office calls it: HTTP Basic client credentials
    holding ``admin:roles``."""

    def __init__(self, http: httpx.AsyncClient, client_id: str, secret: str) -> None:
        self.http = http
        self.auth = httpx.BasicAuth(client_id, secret)

    @classmethod
    async def create(cls, service: Any, http: httpx.AsyncClient) -> AdminApi:
        client, secret = await ClientService(service).create("back-office", ["admin:roles"])
        return cls(http, client.id, secret)

    async def put_role(self, name: str, *permissions: str) -> httpx.Response:
        body = {"permissions": list(permissions)}
        return await self.http.put(f"/admin/roles/{name}", json=body, auth=self.auth)

    async def delete_role(self, name: str, *, end_sessions: bool = False) -> httpx.Response:
        params = {"end_sessions": "true"} if end_sessions else {}
        return await self.http.delete(f"/admin/roles/{name}", params=params, auth=self.auth)

    async def grant(self, user_id: str, role: str, *, end_sessions: bool = False) -> httpx.Response:
        params = {"end_sessions": "true"} if end_sessions else {}
        return await self.http.put(
            f"/admin/users/{user_id}/roles/{role}", params=params, auth=self.auth
        )

    async def revoke(
        self, user_id: str, role: str, *, end_sessions: bool = False
    ) -> httpx.Response:
        params = {"end_sessions": "true"} if end_sessions else {}
        return await self.http.delete(
            f"/admin/users/{user_id}/roles/{role}", params=params, auth=self.auth
        )


@asynccontextmanager
async def resource_server(app: Any, clock: FakeClock) -> AsyncIterator[Verifier]:
    """A resource server's Verifier trusting the in-process tokenward: its JWKS and its
    revocation feed (with a resource-server client's credentials) over ASGI, time from
    ``clock`` (the app's too), refusing an ended session within REVOCATION_BOUND."""
    client, secret = await ClientService(app.state.service).create("notes-api")
    issuer = app.state.service.settings.issuer.rstrip("/")
    verifier = Verifier(
        issuer,
        revocation_url=f"{issuer}/auth/revocations",
        client_id=client.id,
        client_secret=secret,
        revocation_bound=REVOCATION_BOUND,
        async_transport=httpx.ASGITransport(app=app),
        clock=clock,
    )
    try:
        yield verifier
    finally:
        await verifier.aclose()


async def refused_within(verifier: Verifier, token: str, clock: FakeClock) -> float:
    """Present ``token`` every 0.1 s of ``clock`` until the verifier refuses it as revoked;
    the seconds that took. Fails once it is still accepted past the bound."""
    waited = 0.0
    while True:
        try:
            await verifier.averify(token)
        except RevokedTokenError:
            return waited
        assert waited <= REVOCATION_BOUND, f"still accepted {waited:.1f} s later"
        clock.advance(0.1)
        waited += 0.1
