"""Roles and permissions: what a token says its user may do.

A role is named per deployment and grants permissions (strings such as ``notes:read``). A user
holds any number of roles; the access token carries them as ``roles`` (RFC 9068 2.2.3.1) and
the union of their permissions as ``scope`` (space-separated, RFC 9068 2.2.3). Names and
permissions never hold whitespace: both travel space-separated, in the token and in storage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tokenward.exceptions import InvalidRoleError

__all__ = [
    "MAX_GRANTS_BYTES",
    "MAX_PERMISSIONS",
    "NO_GRANTS",
    "PERMISSION_PATTERN",
    "ROLE_NAME_PATTERN",
    "Grants",
    "Role",
    "check_permission",
    "check_role_name",
    "permissions_of",
]

MAX_PERMISSIONS = 100
"""Permissions one role may grant."""
MAX_GRANTS_BYTES = 1920
"""What one user's roles and permissions may take in an access token (``roles`` and ``scope``
as compact JSON). With the claims hook's cap (TOKENWARD_CLAIMS_MAX_BYTES, at most 3072), the
standard claims and how the session authenticated (``amr``, ``acr``, ``auth_time``: 128 bytes
kept for them), a token stays within the 8192 characters verifiers read, whatever the signing
algorithm: a grant past it is refused when it is made, never at a refresh."""

ROLE_NAME_PATTERN = r"[a-z][a-z0-9_.:-]{0,63}"
PERMISSION_PATTERN = r"[\x21\x23-\x5b\x5d-\x7e]{1,128}"
r"""RFC 6749 3.3 scope-token: %x21 / %x23-5B / %x5D-7E (printable ASCII but space, " and \),
at most 128. Both patterns are also the OpenAPI document's (ECMA-262 reads them alike)."""
_ROLE_NAME = re.compile(ROLE_NAME_PATTERN)
_PERMISSION = re.compile(PERMISSION_PATTERN)


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

    @property
    def token_bytes(self) -> int:
        """What these take in a token: ``roles`` and ``scope`` as compact JSON."""
        claims = {"roles": list(self.roles), "scope": self.scope}
        return len(json.dumps(claims, separators=(",", ":")))

    def check_size(self) -> Grants:
        """These grants, if they fit in a token (InvalidRoleError if not)."""
        if self.token_bytes > MAX_GRANTS_BYTES:
            raise InvalidRoleError(
                f"the roles and permissions one user would hold take more than "
                f"{MAX_GRANTS_BYTES} bytes in an access token"
            )
        return self


NO_GRANTS = Grants()
