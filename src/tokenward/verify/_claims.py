"""The verified claims of an access token, typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Claims"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who (``sub``), which session (``sid``) and what it may do.

    ``scope`` comes from the space-separated ``scope`` claim (RFC 9068 2.2.3, RFC 8693 4.2),
    ``roles`` from a ``roles`` list (RFC 9068 2.2.3.1); both are empty when absent. ``raw`` is
    the whole payload, read-only, for claims of your own.
    """

    sub: str
    sid: str
    jti: str
    iss: str
    iat: int
    exp: int
    aud: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    def has_scopes(self, *scopes: str) -> bool:
        """True when the token grants every one of ``scopes``."""
        return all(scope in self.scope for scope in scopes)

    def has_roles(self, *roles: str) -> bool:
        """True when the token carries every one of ``roles``."""
        return all(role in self.roles for role in roles)
