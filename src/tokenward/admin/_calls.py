"""Every admin request, described once and sent by neither: the sans-IO layer.

A :class:`Call` says what to send (method, path, query, JSON body) and how to read what comes
back (:meth:`Call.read`: a status, headers and bytes in; a model, or :class:`AdminError`, out).
:class:`~tokenward.admin.AdminClient` and :class:`~tokenward.admin.AsyncAdminClient` only
send calls, so the two cannot drift apart and all of this is tested without a network, as
httpx's ``Auth.auth_flow`` is written once and merely driven sync or async.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

from tokenward.admin._errors import AdminError, error_from_answer
from tokenward.admin._models import (
    AdminEvent,
    AdminSession,
    AdminUser,
    Role,
    UserPage,
    count,
    read_event,
    read_list,
    read_role,
    read_session,
    read_user,
    read_user_page,
)

__all__ = [
    "Call",
    "basic_authorization",
    "create_user",
    "delete_role",
    "delete_user",
    "disable_user",
    "enable_user",
    "get_user",
    "grant_role",
    "http_options",
    "list_roles",
    "list_sessions",
    "list_users",
    "next_page",
    "put_role",
    "revoke_role",
    "revoke_session",
    "revoke_sessions",
    "set_app_metadata",
    "user_events",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One admin request and the reading of its answer, with no I/O.

    ``json`` is the body (None: no body); it is left out of the repr, as it may hold a
    password. ``on_error`` turns an error answer that is an outcome for this call into a
    result (``revoke_session``'s 404 is "it was not there": False), and re-raises the rest.
    """

    method: str
    path: str
    parse: Callable[[Any], T] = field(repr=False)
    params: dict[str, str] = field(default_factory=dict)
    json: Any = field(default=None, repr=False)
    on_error: Callable[[AdminError], T] | None = field(default=None, repr=False)

    def read(self, status: int, headers: Mapping[str, str], content: bytes) -> T:
        """The result of the answer ``status`` / ``headers`` / ``content``, or AdminError."""
        request = f"{self.method} {self.path}"
        if not 200 <= status < 300:
            error = error_from_answer(status, headers, content, request=request)
            if self.on_error is None:
                raise error
            return self.on_error(error)
        try:
            return self.parse(json.loads(content) if content else None)
        except (ValueError, RecursionError) as exc:  # the server broke the contract
            detail = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            raise AdminError(
                status, "invalid-response", "Unexpected answer", detail, request=request
            ) from None


# -- connection --------------------------------------------------------------------------


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` value for a client: each part form-urlencoded, then base64
    (RFC 6749 2.3.1). httpx's BasicAuth skips the encoding, so a ``:`` or ``%`` in an id or
    secret would reach the server misread."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def http_options(
    base_url: str, client_id: str, client_secret: str, timeout: float
) -> dict[str, Any]:
    """The keyword arguments of the ``httpx.Client`` / ``httpx.AsyncClient`` of a client.

    Redirects are not followed (httpx's default): the credentials go to ``base_url`` only.
    """
    if urlsplit(base_url).scheme not in {"http", "https"}:
        raise ValueError("base_url must be an http(s) URL, such as https://auth.example.com")
    if not client_id or not client_secret:
        raise ValueError("client_id and client_secret are required")
    return {
        "base_url": base_url,
        "timeout": timeout,
        "headers": {
            "Authorization": basic_authorization(client_id, client_secret),
            "Accept": "application/json, application/problem+json",
        },
    }


# -- helpers -----------------------------------------------------------------------------


def _segment(value: str, what: str) -> str:
    """One percent-encoded path segment. "", "." and ".." are refused: they would change the
    path itself once resolved (``revoke_role(user, "..")`` would become ``DELETE`` of the
    user)."""
    if not isinstance(value, str) or value in {"", ".", ".."}:
        raise ValueError(f"{what} must be a non-empty string other than '.' and '..'")
    return quote(value, safe="")


def _user(user_id: str, *rest: str) -> str:
    return "/".join(("/admin/users", _segment(user_id, "user_id"), *rest))


def _names(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):  # a str is an Iterable[str] of its letters
        raise TypeError(f"{what} takes an iterable of names, not one string")
    return list(values)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _nothing(_: Any) -> None:
    return None


def _true(_: Any) -> bool:
    return True


def _false_if_not_found(error: AdminError) -> bool:
    if error.problem == "not-found":
        return False
    raise error


def _key(key: str) -> Callable[[Any], int]:
    return lambda body: count(body, key)


def _sessions(body: Any) -> list[AdminSession]:
    return [read_session(item) for item in read_list(body, "sessions")]


def _events(body: Any) -> list[AdminEvent]:
    return [read_event(item) for item in read_list(body, "events")]


def _roles(body: Any) -> list[Role]:
    return [read_role(item) for item in read_list(body, "roles")]


# -- users -------------------------------------------------------------------------------


def list_users(
    *, limit: int = 50, cursor: str | None = None, email_prefix: str | None = None
) -> Call[UserPage]:
    params = {"limit": str(limit)}
    if cursor is not None:
        params["cursor"] = cursor
    if email_prefix is not None:
        params["email_prefix"] = email_prefix
    return Call("GET", "/admin/users", read_user_page, params)


def next_page(call: Call[UserPage], page: UserPage) -> Call[UserPage] | None:
    """The call for the page after ``page`` (which ``call`` fetched); None after the last.

    A cursor that does not move would walk forever: it is refused as a broken answer.
    """
    if page.next_cursor is None:
        return None
    if page.next_cursor == call.params.get("cursor"):
        raise AdminError(
            200,
            "invalid-response",
            "Unexpected answer",
            "next_cursor is the cursor just sent",
            request=f"{call.method} {call.path}",
        )
    return dataclasses.replace(call, params={**call.params, "cursor": page.next_cursor})


def create_user(
    email: str,
    *,
    password: str | None = None,
    email_verified: bool = False,
    app_metadata: Mapping[str, Any] | None = None,
    roles: Iterable[str] = (),
    send_invitation: bool | None = None,
) -> Call[AdminUser]:
    body: dict[str, Any] = {"email": email, "email_verified": email_verified}
    if password is not None:
        body["password"] = password
    if app_metadata is not None:
        body["app_metadata"] = dict(app_metadata)
    names = _names(roles, "roles")
    if names:
        body["roles"] = names
    if send_invitation is not None:
        body["send_invitation"] = send_invitation
    return Call("POST", "/admin/users", read_user, json=body)


def get_user(user_id: str) -> Call[AdminUser]:
    return Call("GET", _user(user_id), read_user)


def delete_user(user_id: str) -> Call[None]:
    return Call("DELETE", _user(user_id), _nothing)


def disable_user(user_id: str) -> Call[int]:
    return Call("POST", _user(user_id, "disable"), _key("sessions_ended"))


def enable_user(user_id: str) -> Call[None]:
    return Call("POST", _user(user_id, "enable"), _nothing)


def set_app_metadata(user_id: str, metadata: Mapping[str, Any]) -> Call[AdminUser]:
    if not isinstance(metadata, Mapping):
        raise TypeError("metadata must be a mapping (a JSON object)")
    return Call("PUT", _user(user_id, "app_metadata"), read_user, json=dict(metadata))


def grant_role(user_id: str, role: str, *, end_sessions: bool = False) -> Call[None]:
    path = _user(user_id, "roles", _segment(role, "role"))
    return Call("PUT", path, _nothing, {"end_sessions": _flag(end_sessions)})


def revoke_role(user_id: str, role: str, *, end_sessions: bool = False) -> Call[None]:
    path = _user(user_id, "roles", _segment(role, "role"))
    return Call("DELETE", path, _nothing, {"end_sessions": _flag(end_sessions)})


# -- sessions and events -----------------------------------------------------------------


def list_sessions(user_id: str) -> Call[list[AdminSession]]:
    return Call("GET", _user(user_id, "sessions"), _sessions)


def revoke_sessions(user_id: str) -> Call[int]:
    return Call("DELETE", _user(user_id, "sessions"), _key("ended"))


def reset_factors(user_id: str) -> Call[int]:
    return Call("DELETE", _user(user_id, "factors"), _key("removed"))


def revoke_session(user_id: str, session_id: str) -> Call[bool]:
    path = _user(user_id, "sessions", _segment(session_id, "session_id"))
    return Call("DELETE", path, _true, on_error=_false_if_not_found)


def user_events(user_id: str, *, limit: int = 50) -> Call[list[AdminEvent]]:
    return Call("GET", _user(user_id, "events"), _events, {"limit": str(limit)})


# -- roles -------------------------------------------------------------------------------


def list_roles() -> Call[list[Role]]:
    return Call("GET", "/admin/roles", _roles)


def put_role(name: str, permissions: Iterable[str] = ()) -> Call[Role]:
    path = "/admin/roles/" + _segment(name, "name")
    return Call("PUT", path, read_role, json={"permissions": _names(permissions, "permissions")})


def delete_role(name: str, *, end_sessions: bool = False) -> Call[bool]:
    path = "/admin/roles/" + _segment(name, "name")
    return Call(
        "DELETE", path, _true, {"end_sessions": _flag(end_sessions)}, on_error=_false_if_not_found
    )
