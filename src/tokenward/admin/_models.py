"""What the admin API answers, as frozen values, and the strict readers of its JSON.

The readers check every member the contract names and ignore members it does not (a newer
server may add some). A member missing or of the wrong type raises ``ValueError`` naming it
(never its value); the call layer turns that into ``AdminError("invalid-response")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AdminEvent",
    "AdminSession",
    "AdminUser",
    "Role",
    "UserPage",
    "count",
    "read_event",
    "read_list",
    "read_role",
    "read_session",
    "read_user",
    "read_user_page",
]


@dataclass(frozen=True, slots=True)
class AdminUser:
    """A user as an administrator sees it."""

    id: str
    email: str
    created_at: datetime
    email_verified: bool
    disabled: bool
    roles: tuple[str, ...]
    scope: tuple[str, ...]
    """The permissions the user's access tokens carry (its roles' permissions, one each)."""
    app_metadata: dict[str, Any] = field(hash=False)
    """Set by administrators only (:meth:`AdminClient.set_app_metadata`)."""
    user_metadata: dict[str, Any] = field(hash=False)
    """Set by the user; read-only here."""


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of :meth:`AdminClient.list_users`; ``next_cursor`` is None on the last one."""

    users: tuple[AdminUser, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AdminSession:
    """A signed-in session (one refresh-token family) of a user."""

    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    device: str
    ip: str | None


@dataclass(frozen=True, slots=True)
class AdminEvent:
    """One entry of a user's audit trail (sign-in, password change, session ended, ...)."""

    id: int
    at: datetime
    type: str
    session_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any] | None = field(hash=False)


@dataclass(frozen=True, slots=True)
class Role:
    """A named set of permissions; a user's token scope is the union of its roles'."""

    name: str
    permissions: tuple[str, ...]
    created_at: datetime


# -- readers ---------------------------------------------------------------------------------


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object")
    return value


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a JSON array")
    return value


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    return value


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    return None if doc.get(key, ...) is None else _str(doc, key)


def _bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false")
    return value


def count(doc: Any, key: str) -> int:
    """A non-negative integer member of an answer (``sessions_ended``, ``ended``)."""
    value = _object(doc, "answer").get(key)
    # bool is an int to Python, not to JSON.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key}: expected a non-negative integer")
    return value


def _strs(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    values = _list(doc, key)
    if not all(isinstance(value, str) for value in values):
        raise ValueError(f"{key}: expected an array of strings")
    return tuple(values)


def _time(doc: dict[str, Any], key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(_str(doc, key))
    except ValueError:
        raise ValueError(f"{key}: expected an RFC 3339 time") from None
    if moment.tzinfo is None:  # RFC 3339 requires the offset; guessing one would shift times
        raise ValueError(f"{key}: expected an RFC 3339 time with its offset")
    return moment.astimezone(UTC)


def read_user(value: Any) -> AdminUser:
    """An :class:`AdminUser` from the API's user object."""
    doc = _object(value, "user")
    return AdminUser(
        id=_str(doc, "id"),
        email=_str(doc, "email"),
        created_at=_time(doc, "created_at"),
        email_verified=_bool(doc, "email_verified"),
        disabled=_bool(doc, "disabled"),
        roles=_strs(doc, "roles"),
        scope=tuple(_str(doc, "scope").split()),
        app_metadata=_object(doc.get("app_metadata"), "app_metadata"),
        user_metadata=_object(doc.get("user_metadata"), "user_metadata"),
    )


def read_user_page(value: Any) -> UserPage:
    doc = _object(value, "answer")
    users = tuple(read_user(user) for user in _list(doc, "users"))
    return UserPage(users=users, next_cursor=_optional_str(doc, "next_cursor"))


def read_session(value: Any) -> AdminSession:
    doc = _object(value, "session")
    return AdminSession(
        id=_str(doc, "id"),
        created_at=_time(doc, "created_at"),
        last_used_at=_time(doc, "last_used_at"),
        expires_at=_time(doc, "expires_at"),
        device=_str(doc, "device"),
        ip=_optional_str(doc, "ip"),
    )


def read_event(value: Any) -> AdminEvent:
    doc = _object(value, "event")
    detail = doc.get("detail")
    return AdminEvent(
        id=count(doc, "id"),
        at=_time(doc, "at"),
        type=_str(doc, "type"),
        session_id=_optional_str(doc, "session_id"),
        ip=_optional_str(doc, "ip"),
        user_agent=_optional_str(doc, "user_agent"),
        detail=None if detail is None else _object(detail, "detail"),
    )


def read_role(value: Any) -> Role:
    doc = _object(value, "role")
    return Role(
        name=_str(doc, "name"),
        permissions=_strs(doc, "permissions"),
        created_at=_time(doc, "created_at"),
    )


def read_list(value: Any, key: str) -> list[Any]:
    """The array under ``key`` of an answer object (``{"sessions": [...]}``)."""
    return _list(_object(value, "answer"), key)
