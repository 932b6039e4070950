"""What resource servers may ask: introspection (RFC 7662), revocation (RFC 7009) and the feed
of ended sessions that lets them refuse a revoked session's access tokens within seconds.

Every call is authenticated with client credentials made by ``tokenward clients create``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select

from tokenward.audit import ClientInfo, EventType
from tokenward.exceptions import TokenError
from tokenward.service import AuthService
from tokenward.store import ClientRow, SessionRow, UserRow
from tokenward.store.queries import new_event
from tokenward.tokens import LEEWAY_SECONDS

__all__ = ["ClientService", "ResourceClient", "Revocation", "RevocationPage"]

FEED_SETTLE = timedelta(seconds=1)
"""The feed lags this much behind the clock, so that a transaction that was still committing
when a page was read (its revoked_at a moment in the past) is on the next page, not lost."""
FEED_PAGE = 1000
_DUMMY_HASH = hashlib.sha256(b"tokenward-no-such-client").hexdigest()


@dataclass(frozen=True, slots=True)
class ResourceClient:
    id: str
    name: str
    created_at: datetime


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


def _cursor(moment: datetime, sid: str) -> str:
    return f"{int(moment.timestamp() * 1_000_000)}:{sid}"


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    micros, _, sid = cursor.partition(":")
    if not micros.isdigit() or len(micros) > 20 or len(sid) > 64:
        raise ValueError("bad cursor")
    return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), sid


class ClientService:
    """Client credentials and the resource-server endpoints' logic."""

    def __init__(self, service: AuthService) -> None:
        self.service = service
        self.db = service.db

    # -- credentials (the CLI) ---------------------------------------------------------------

    async def create(self, name: str) -> tuple[ResourceClient, str]:
        """A new client; the secret is returned once and only its hash is kept."""
        client_id = "twc_" + secrets.token_urlsafe(12)
        secret = secrets.token_urlsafe(32)
        now = self.service.clock()
        async with self.db.write() as db:
            db.add(
                ClientRow(id=client_id, name=name, secret_hash=_secret_hash(secret), created_at=now)
            )
        return ResourceClient(client_id, name, now), secret

    async def list(self) -> list[ResourceClient]:
        async with self.db.read() as db:
            rows = (await db.execute(select(ClientRow).order_by(ClientRow.created_at))).scalars()
            return [ResourceClient(row.id, row.name, row.created_at) for row in rows]

    async def delete(self, client_id: str) -> bool:
        async with self.db.write() as db:
            result = await db.execute(delete(ClientRow).where(ClientRow.id == client_id))
        return bool(getattr(result, "rowcount", 0))

    async def authenticate(self, client_id: str, secret: str) -> bool:
        """Constant-time check; an unknown id costs the same comparison."""
        async with self.db.read() as db:
            row = await db.get(ClientRow, client_id[:64])
        expected = row.secret_hash if row else _DUMMY_HASH
        return hmac.compare_digest(expected, _secret_hash(secret)) and row is not None

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
            principal = await service.authenticate(token)
        except TokenError:
            return None
        claims = principal.claims
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "access_token",
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
        return answer

    async def _introspect_refresh(self, token: str) -> dict[str, Any] | None:
        service = self.service
        try:
            presented = service.refresh_tokens.parse(token)
        except TokenError:
            return None
        now = service.clock()
        async with self.db.read() as db:
            found = (
                await db.execute(
                    select(SessionRow, UserRow)
                    .join(UserRow, UserRow.id == SessionRow.user_id)
                    .where(SessionRow.id == presented.session_id)
                )
            ).first()
        if found is None:
            return None
        session, user = found
        try:
            service.check_alive(session, user, now)
        except TokenError:
            return None
        if presented.generation != session.generation:
            return None  # rotated out: not usable any more (a replay would end the session)
        return {
            "active": True,
            "token_type": "refresh_token",
            "sub": user.id,
            "sid": session.id,
            "username": user.email,
            "iss": service.settings.issuer,
            "exp": int(min(session.expires_at, session.max_expires_at).timestamp()),
            "iat": int(session.created_at.timestamp()),
        }

    # -- RFC 7009 ----------------------------------------------------------------------------

    async def revoke(self, token: str, client: ClientInfo) -> None:
        """End the session of a refresh or access token; unknown tokens are silently fine."""
        service = self.service
        if await service.logout(token, client):
            return
        try:
            principal = await service.authenticate(token)
        except TokenError:
            return
        now = service.clock()
        async with self.db.write() as db:
            session = await db.get(SessionRow, principal.session_id, with_for_update=True)
            if session is None or session.revoked_at is not None:
                return
            session.revoked_at = now
            session.revoked_reason = "revoked"
            db.add(
                new_event(
                    EventType.SESSION_REVOKED,
                    now,
                    client,
                    user_id=session.user_id,
                    session_id=session.id,
                    detail={"by": "client"},
                )
            )

    # -- the revocation feed -----------------------------------------------------------------

    def window(self) -> timedelta:
        """How far back the feed reaches: an older session's access tokens are all expired."""
        return self.service.settings.access_ttl + timedelta(seconds=LEEWAY_SECONDS)

    async def revocations(self, after: str | None) -> RevocationPage:
        """Sessions ended since ``after`` (a cursor from the last page), oldest first."""
        now = self.service.clock()
        since, since_sid = now - self.window(), ""
        if after:
            since_cursor, since_sid = _parse_cursor(after)
            since = max(since, since_cursor)
        settled = now - FEED_SETTLE
        query = (
            select(SessionRow.id, SessionRow.revoked_at)
            .where(
                SessionRow.revoked_at.is_not(None),
                SessionRow.revoked_at <= settled,
                or_(
                    SessionRow.revoked_at > since,
                    and_(SessionRow.revoked_at == since, SessionRow.id > since_sid),
                ),
            )
            .order_by(SessionRow.revoked_at, SessionRow.id)
            .limit(FEED_PAGE)
        )
        async with self.db.read() as db:
            rows = [(sid, at) for sid, at in (await db.execute(query)).all() if at is not None]
        revoked = [Revocation(sid, int(at.timestamp())) for sid, at in rows]
        if rows:
            cursor = _cursor(rows[-1][1], rows[-1][0])
        elif after and since >= settled:
            cursor = after
        else:
            # Nothing up to ``settled`` is left unread: the next page starts there.
            cursor = _cursor(settled, "")
        return RevocationPage(revoked, cursor)
