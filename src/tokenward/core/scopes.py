"""The admin API's scopes: what a client's credentials allow (``tokenward clients create
NAME --scope ...``). A client without any is a resource server only (introspection,
revocation, the revocation feed)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["AdminScope", "allows", "parse_scopes"]


class AdminScope(StrEnum):
    USERS_READ = "admin:users:read"
    """Users: get, list, search; a user's events."""
    USERS = "admin:users"
    """Users: create, disable, enable, delete, set app_metadata (and read)."""
    ROLES = "admin:roles"
    """Roles: create, replace, delete; grant to and revoke from users."""
    SESSIONS = "admin:sessions"
    """A user's sessions: list, revoke one or all."""


_IMPLIED = {AdminScope.USERS: {AdminScope.USERS_READ}}


def allows(held: Iterable[str], needed: AdminScope) -> bool:
    """Whether a client holding ``held`` may do what ``needed`` covers."""
    return any(
        scope == needed or needed in _IMPLIED.get(AdminScope(scope), ())
        for scope in held
        if scope in AdminScope._value2member_map_
    )


def parse_scopes(names: Iterable[str]) -> tuple[str, ...]:
    """Admin scopes, checked and sorted; ValueError naming the first unknown one."""
    held = set()
    for name in names:
        if name not in AdminScope._value2member_map_:
            known = ", ".join(AdminScope)
            raise ValueError(f"unknown scope {name!r} (one of {known})")
        held.add(name)
    return tuple(sorted(held))
