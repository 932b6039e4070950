"""The blocking client: a thin shell that sends the calls of :mod:`tokenward.admin._calls`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from tokenward.admin import _calls
from tokenward.admin._calls import Call
from tokenward.admin._models import AdminEvent, AdminSession, AdminUser, Role, UserPage

__all__ = ["AdminClient"]

T = TypeVar("T")


class AdminClient:
    """tokenward's admin API over one ``httpx.Client`` (a connection pool: keep one, close it).

    Authenticates as an API client with HTTP Basic (``client_id``/``client_secret``); what it
    may do is the client's scopes (``admin:users:read``, ``admin:users``, ``admin:roles``,
    ``admin:sessions``). Every non-2xx answer raises :class:`~tokenward.admin.AdminError`;
    network failures and timeouts raise httpx's own exceptions (``httpx.TransportError``).
    ``transport`` replaces httpx's (a custom TLS setup, or an in-process server in tests).
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = _calls.http_options(base_url, client_id, client_secret, timeout)
        self.base_url = base_url
        self.client_id = client_id
        self._http = httpx.Client(**options, transport=transport)

    def __repr__(self) -> str:
        return f"AdminClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        response = self._http.request(call.method, call.path, params=call.params, json=call.json)
        return call.read(response.status_code, response.headers, response.content)

    # -- users -----------------------------------------------------------------------------

    def list_users(
        self, *, limit: int = 50, cursor: str | None = None, email_prefix: str | None = None
    ) -> UserPage:
        """One page of users (``limit`` 1-200); pass its ``next_cursor`` for the next."""
        return self._send(_calls.list_users(limit=limit, cursor=cursor, email_prefix=email_prefix))

    def iter_users(
        self, *, email_prefix: str | None = None, page_size: int = 100
    ) -> Iterator[AdminUser]:
        """Every user (whose email starts with ``email_prefix``), fetching page by page."""
        call: Call[UserPage] | None = _calls.list_users(limit=page_size, email_prefix=email_prefix)
        while call is not None:
            page = self._send(call)
            yield from page.users
            call = _calls.next_page(call, page)

    def create_user(
        self,
        email: str,
        *,
        password: str | None = None,
        email_verified: bool = False,
        app_metadata: Mapping[str, Any] | None = None,
        roles: Iterable[str] = (),
        send_invitation: bool | None = None,
    ) -> AdminUser:
        """Create a user; without ``password`` the user sets one through an invitation."""
        return self._send(
            _calls.create_user(
                email,
                password=password,
                email_verified=email_verified,
                app_metadata=app_metadata,
                roles=roles,
                send_invitation=send_invitation,
            )
        )

    def get_user(self, user_id: str) -> AdminUser:
        return self._send(_calls.get_user(user_id))

    def delete_user(self, user_id: str) -> None:
        """Delete the user and end its sessions."""
        return self._send(_calls.delete_user(user_id))

    def disable_user(self, user_id: str) -> int:
        """Refuse the user's sign-ins and end its sessions; the number of sessions ended."""
        return self._send(_calls.disable_user(user_id))

    def enable_user(self, user_id: str) -> None:
        return self._send(_calls.enable_user(user_id))

    def set_app_metadata(self, user_id: str, metadata: Mapping[str, Any]) -> AdminUser:
        """Replace the user's ``app_metadata`` whole (not a merge); the updated user."""
        return self._send(_calls.set_app_metadata(user_id, metadata))

    def grant_role(self, user_id: str, role: str, *, end_sessions: bool = False) -> None:
        """Grant ``role`` (already held: no change). Tokens already issued keep their scope
        until they expire, unless ``end_sessions``."""
        return self._send(_calls.grant_role(user_id, role, end_sessions=end_sessions))

    def revoke_role(self, user_id: str, role: str, *, end_sessions: bool = False) -> None:
        """Take ``role`` away (``not-found`` if not held). With ``end_sessions`` the user's
        sessions end now, instead of its tokens keeping the role's scope until they expire."""
        return self._send(_calls.revoke_role(user_id, role, end_sessions=end_sessions))

    # -- sessions and events -----------------------------------------------------------------

    def list_sessions(self, user_id: str) -> list[AdminSession]:
        return self._send(_calls.list_sessions(user_id))

    def revoke_sessions(self, user_id: str) -> int:
        """End every session of the user; the number ended."""
        return self._send(_calls.revoke_sessions(user_id))

    def revoke_session(self, user_id: str, session_id: str) -> bool:
        """End one session; False if tokenward answers ``not-found`` (no such session)."""
        return self._send(_calls.revoke_session(user_id, session_id))

    def reset_factors(self, user_id: str) -> int:
        """Remove every second factor of the user (and the recovery codes); how many."""
        return self._send(_calls.reset_factors(user_id))

    def user_events(self, user_id: str, *, limit: int = 50) -> list[AdminEvent]:
        """The user's latest audit events (``limit`` 1-200)."""
        return self._send(_calls.user_events(user_id, limit=limit))

    # -- roles -------------------------------------------------------------------------------

    def list_roles(self) -> list[Role]:
        return self._send(_calls.list_roles())

    def put_role(self, name: str, permissions: Iterable[str] = ()) -> Role:
        """Create the role, or replace its permissions whole."""
        return self._send(_calls.put_role(name, permissions))

    def delete_role(self, name: str, *, end_sessions: bool = False) -> bool:
        """Delete the role (and take it from its holders); False if there was none."""
        return self._send(_calls.delete_role(name, end_sessions=end_sessions))
