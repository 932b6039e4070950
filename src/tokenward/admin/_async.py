"""The asyncio client: :class:`~tokenward.admin.AdminClient`'s methods, awaited. Same calls
(:mod:`tokenward.admin._calls`), another transport; nothing else lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar

import httpx

from tokenward.admin import _calls
from tokenward.admin._calls import Call
from tokenward.admin._models import AdminEvent, AdminSession, AdminUser, Role, UserPage

__all__ = ["AsyncAdminClient"]

T = TypeVar("T")


class AsyncAdminClient:
    """:class:`~tokenward.admin.AdminClient` for event loops, over one ``httpx.AsyncClient``.

    Each method is documented on :class:`~tokenward.admin.AdminClient`.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = _calls.http_options(base_url, client_id, client_secret, timeout)
        self.base_url = base_url
        self.client_id = client_id
        self._http = httpx.AsyncClient(**options, transport=transport)

    def __repr__(self) -> str:
        return f"AsyncAdminClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    async def __aenter__(self) -> AsyncAdminClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        response = await self._http.request(
            call.method, call.path, params=call.params, json=call.json
        )
        return call.read(response.status_code, response.headers, response.content)

    # -- users -----------------------------------------------------------------------------

    async def list_users(
        self, *, limit: int = 50, cursor: str | None = None, email_prefix: str | None = None
    ) -> UserPage:
        return await self._send(
            _calls.list_users(limit=limit, cursor=cursor, email_prefix=email_prefix)
        )

    async def iter_users(
        self, *, email_prefix: str | None = None, page_size: int = 100
    ) -> AsyncIterator[AdminUser]:
        call: Call[UserPage] | None = _calls.list_users(limit=page_size, email_prefix=email_prefix)
        while call is not None:
            page = await self._send(call)
            for user in page.users:
                yield user
            call = _calls.next_page(call, page)

    async def create_user(
        self,
        email: str,
        *,
        password: str | None = None,
        email_verified: bool = False,
        app_metadata: Mapping[str, Any] | None = None,
        roles: Iterable[str] = (),
        send_invitation: bool | None = None,
    ) -> AdminUser:
        return await self._send(
            _calls.create_user(
                email,
                password=password,
                email_verified=email_verified,
                app_metadata=app_metadata,
                roles=roles,
                send_invitation=send_invitation,
            )
        )

    async def get_user(self, user_id: str) -> AdminUser:
        return await self._send(_calls.get_user(user_id))

    async def delete_user(self, user_id: str) -> None:
        return await self._send(_calls.delete_user(user_id))

    async def disable_user(self, user_id: str) -> int:
        return await self._send(_calls.disable_user(user_id))

    async def enable_user(self, user_id: str) -> None:
        return await self._send(_calls.enable_user(user_id))

    async def set_app_metadata(self, user_id: str, metadata: Mapping[str, Any]) -> AdminUser:
        return await self._send(_calls.set_app_metadata(user_id, metadata))

    async def grant_role(self, user_id: str, role: str, *, end_sessions: bool = False) -> None:
        return await self._send(_calls.grant_role(user_id, role, end_sessions=end_sessions))

    async def revoke_role(self, user_id: str, role: str, *, end_sessions: bool = False) -> None:
        return await self._send(_calls.revoke_role(user_id, role, end_sessions=end_sessions))

    # -- sessions and events -----------------------------------------------------------------

    async def list_sessions(self, user_id: str) -> list[AdminSession]:
        return await self._send(_calls.list_sessions(user_id))

    async def revoke_sessions(self, user_id: str) -> int:
        return await self._send(_calls.revoke_sessions(user_id))

    async def reset_factors(self, user_id: str) -> int:
        """Remove every second factor of the user (and the recovery codes); how many."""
        return await self._send(_calls.reset_factors(user_id))

    async def revoke_session(self, user_id: str, session_id: str) -> bool:
        return await self._send(_calls.revoke_session(user_id, session_id))

    async def user_events(self, user_id: str, *, limit: int = 50) -> list[AdminEvent]:
        return await self._send(_calls.user_events(user_id, limit=limit))

    # -- roles -------------------------------------------------------------------------------

    async def list_roles(self) -> list[Role]:
        return await self._send(_calls.list_roles())

    async def put_role(self, name: str, permissions: Iterable[str] = ()) -> Role:
        return await self._send(_calls.put_role(name, permissions))

    async def delete_role(self, name: str, *, end_sessions: bool = False) -> bool:
        return await self._send(_calls.delete_role(name, end_sessions=end_sessions))
