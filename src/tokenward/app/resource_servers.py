"""What resource servers may ask: introspection (RFC 7662), revocation (RFC 7009) and the feed
of ended sessions that lets them refuse a revoked session's access tokens within seconds.

Every call is authenticated with client credentials made by ``tokenward clients create``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tokenward.app.service import AuthService
from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.scopes import parse_scopes
from tokenward.core.sessions import EndReason
from tokenward.core.tokens import LEEWAY_SECONDS
from tokenward.exceptions import TokenError
from tokenward.storage.port import ClientRecord, retrying

__all__ = ["ClientService", "ResourceClient", "Revocation", "RevocationPage"]

FEED_PAGE = 1000
_DUMMY_HASH = hashlib.sha256(b"tokenward-no-such-client").hexdigest()


@dataclass(frozen=True, slots=True)
class ResourceClient:
    id: str
    name: str
    created_at: datetime
    scopes: tuple[str, ...] = ()
    """Admin API scopes (core.scopes.AdminScope); none for a resource server only."""


@dataclass(frozen=True, slots=True)
class Revocation:
    sid: str
    revoked_at: int


@dataclass(frozen=True, slots=True)
class RevocationPage:
    revoked: list[Revocation]
    cursor: str


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse_cursor(cursor: str) -> int:
    """The revocation log id a cursor names; ValueError for anything else (old cursors too)."""
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 18:
        raise ValueError("bad cursor")
    return int(cursor)


class ClientService:
    """Client credentials and the resource-server endpoints' logic."""

    def __init__(self, service: AuthService) -> None:
        self.service = service
        self.store = service.store

    # -- credentials (the CLI) ---------------------------------------------------------------

    async def create(self, name: str, scopes: Iterable[str] = ()) -> tuple[ResourceClient, str]:
        """A new client; the secret is returned once and only its hash is kept. ``scopes``:
        admin API scopes (ValueError for one that is not an AdminScope)."""
        held = parse_scopes(scopes)
        client_id = "twc_" + secrets.token_urlsafe(12)
        secret = secrets.token_urlsafe(32)
        now = self.service.now()
        async with self.store.write() as tx:
            await tx.add_client(ClientRecord(client_id, name, _secret_hash(secret), now, held))
        return ResourceClient(client_id, name, now, held), secret

    async def list(self) -> list[ResourceClient]:
        async with self.store.read() as tx:
            found = await tx.clients()
        return [
            ResourceClient(client.id, client.name, client.created_at, client.scopes)
            for client in found
        ]

    async def delete(self, client_id: str) -> bool:
        async with self.store.write() as tx:
            return await tx.delete_client(client_id)

    async def authenticate(self, client_id: str, secret: str) -> bool:
        """Constant-time check; an unknown id costs the same comparison."""
        return await self.authenticated(client_id, secret) is not None

    async def authenticated(self, client_id: str, secret: str) -> ResourceClient | None:
        """The client these credentials are right for; None otherwise (constant time: an
        unknown id costs the same comparison)."""
        async with self.store.read() as tx:
            row = await tx.client(client_id[:64])
        expected = row.secret_hash if row else _DUMMY_HASH
        if not hmac.compare_digest(expected, _secret_hash(secret)) or row is None:
            return None
        return ResourceClient(row.id, row.name, row.created_at, row.scopes)

    # -- RFC 7662 ----------------------------------------------------------------------------

    async def introspect(self, token: str, hint: str | None = None) -> dict[str, Any]:
        """``{"active": false}`` for anything not currently valid; claims otherwise."""
        order = (self._introspect_refresh, self._introspect_access)
        if hint == "access_token":
            order = order[::-1]
        for attempt in order:
            result = await attempt(token)
            if result is not None:
                return result
        return {"active": False}

    async def _introspect_access(self, token: str) -> dict[str, Any] | None:
        service = self.service
        try:
            principal = await service.sessions.authenticate(token)
        except TokenError:
            return None
        claims = principal.claims
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",  # RFC 7662 2.2: the RFC 6749 type, as issued
            "sub": claims.sub,
            "sid": claims.sid,
            "iss": claims.iss,
            "exp": claims.exp,
            "iat": claims.iat,
            "jti": claims.jti,
            "username": principal.user.email,
        }
        if claims.aud:
            answer["aud"] = claims.aud[0] if len(claims.aud) == 1 else list(claims.aud)
        if claims.scope:
            answer["scope"] = " ".join(claims.scope)  # RFC 7662 2.2: as the token says
        if claims.acr is not None:
            # RFC 9470 section 6.2: how the user authenticated, for step-up decisions.
            answer["acr"] = claims.acr
        if claims.auth_time is not None:
            answer["auth_time"] = claims.auth_time
        if claims.amr:
            answer["amr"] = list(claims.amr)
        return answer

    async def _introspect_refresh(self, token: str) -> dict[str, Any] | None:
        service = self.service
        try:
            presented = service.refresh_tokens.parse(token)
        except TokenError:
            return None
        now = service.now()
        async with self.store.read() as tx:
            found = await tx.session_and_account(presented.session_id)
        if found is None:
            return None
        session, user, grants = found
        try:
            session.check_alive(now, user_disabled=user.disabled)
        except TokenError:
            return None
        if presented.generation != session.generation:
            return None  # rotated out: not usable any more (a replay would end the session)
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "refresh_token",
            "sub": user.id,
            "sid": session.id,
            "username": user.email,
            "iss": service.settings.issuer,
            "exp": int(session.ends_at.timestamp()),
            "iat": int(session.created_at.timestamp()),
        }
        if grants.permissions:
            answer["scope"] = grants.scope  # what its next access token will carry
        return answer

    # -- RFC 7009 ----------------------------------------------------------------------------

    async def revoke(self, token: str, client: ClientInfo) -> None:
        """End the session of a refresh or access token; unknown tokens are silently fine."""
        service = self.service
        if await service.sessions.logout(token, client):
            return
        try:
            principal = await service.sessions.authenticate(token)
        except TokenError:
            return
        now = service.now()

        async def end() -> None:
            async with self.store.write() as tx:
                user_id = principal.user.id
                only = principal.session_id
                for sid in await tx.end_sessions(user_id, now, EndReason.REVOKED, only=only):
                    tx.add_event(
                        NewEvent(
                            EventType.SESSION_REVOKED,
                            now,
                            client,
                            user_id=user_id,
                            session_id=sid,
                            detail={"by": "client"},
                        )
                    )

        await retrying(end)

    # -- the revocation feed -----------------------------------------------------------------

    def window(self) -> timedelta:
        """How far back the feed reaches: an older session's access tokens are all expired."""
        return self.service.settings.access_ttl + timedelta(seconds=LEEWAY_SECONDS)

    async def revocations(self, after: str | None) -> RevocationPage:
        """Sessions ended since ``after`` (a cursor from the last page), in commit order.

        The cursor is the last revocation log id served. The log is numbered in commit order
        (see RevocationRow), so nothing can commit behind a cursor once it was handed out,
        however late a revocation commits after its timestamp and whatever the clocks of the
        instances say. A cursor past the log's end (a restored database, a forged one) is
        refused like a malformed one: the verifier starts again from the whole window.
        """
        now = self.service.now()
        since = 0 if not after else _parse_cursor(after)
        async with self.store.read() as tx:
            # One snapshot on SQLite; on PostgreSQL every number up to the newest visible one
            # has committed already (the log's lock), so a later statement sees them all.
            last = await tx.last_revocation()
            if since > last:
                raise ValueError("cursor past the end of the revocation log")
            window = None if after else now - self.window()
            rows = await tx.revocations(after=since, upto=last, since=window, limit=FEED_PAGE)
        revoked = [Revocation(row.session_id, int(row.revoked_at.timestamp())) for row in rows]
        cursor = rows[-1].number if len(rows) == FEED_PAGE else last
        return RevocationPage(revoked, str(cursor))
