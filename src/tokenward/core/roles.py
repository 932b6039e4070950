"""Roles and permissions: what a token says its user may do.

A role is named per deployment and grants permissions (strings such as ``notes:read``). A user
holds any number of roles; the access token carries them as ``roles`` (RFC 9068 2.2.3.1) and
the union of their permissions as ``scope`` (space-separated, RFC 9068 2.2.3). Names and
permissions never hold whitespace: both travel space-separated, in the token and in storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tokenward.exceptions import InvalidRoleError

__all__ = [
    "MAX_PERMISSIONS",
    "NO_GRANTS",
    "Grants",
    "Role",
    "check_permission",
    "check_role_name",
    "permissions_of",
]

MAX_PERMISSIONS = 100
"""Permissions one role may grant."""

_ROLE_NAME = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
# RFC 6749 3.3 scope-token: %x21 / %x23-5B / %x5D-7E (printable ASCII but space, " and \).
_PERMISSION = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")


def check_role_name(name: str) -> str:
    """``name`` if it is a role name: lower-case ASCII letter first, then letters, digits or
    ``_ . : -``, at most 64 characters. InvalidRoleError otherwise."""
    if not isinstance(name, str) or _ROLE_NAME.fullmatch(name) is None:
        raise InvalidRoleError(
            "a role name is 1-64 characters: a lower-case letter, then a-z 0-9 _ . : -"
        )
    return name


def check_permission(permission: str) -> str:
    """``permission`` if it is an RFC 6749 scope token of at most 128 characters."""
    if not isinstance(permission, str) or _PERMISSION.fullmatch(permission) is None:
        raise InvalidRoleError(
            "a permission is 1-128 printable ASCII characters, without spaces, quotes or "
            "backslashes (an RFC 6749 scope token)"
        )
    return permission


def permissions_of(permissions: Iterable[str]) -> tuple[str, ...]:
    """Checked, de-duplicated and sorted: the one form a role keeps its permissions in."""
    checked = sorted({check_permission(p) for p in permissions})
    if len(checked) > MAX_PERMISSIONS:
        raise InvalidRoleError(f"a role grants at most {MAX_PERMISSIONS} permissions")
    return tuple(checked)


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    permissions: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Grants:
    """What a user holds: role names and the union of their permissions, both sorted."""

    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, roles: str | None, permissions: str | None) -> Grants:
        """From storage's two space-separated aggregates (either None for no rows)."""
        if not roles:
            return NO_GRANTS
        return cls(
            tuple(sorted(set(roles.split()))), tuple(sorted(set((permissions or "").split())))
        )

    @property
    def scope(self) -> str:
        """The ``scope`` claim: the permissions, space-separated ("" for none)."""
        return " ".join(self.permissions)


NO_GRANTS = Grants()
