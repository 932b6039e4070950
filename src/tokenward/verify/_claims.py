"""The verified claims of an access token, typed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

__all__ = ["Claims"]


class _ReadOnlyDict(dict[str, Any]):
    """The token's payload: a dict that refuses changes (``TypeError``, as a MappingProxyType
    would), so that one request cannot change what others see, and that pickles and deep-copies
    (a MappingProxyType does neither). Made by ``_read_only``; its values are the decoded JSON.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[misc]
        # Called only to rebuild one from its items, as ``dataclasses.asdict`` does: that
        # gives plain data, a dict of one's own. ``_read_only`` makes the read-only ones.
        return dict(*args, **kwargs)

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("the claims of a verified token are read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Callable[[Mapping[str, Any]], _ReadOnlyDict], tuple[Any]]:
        # pickle and copy.deepcopy rebuild it read-only (copying the items, when deep).
        return (_read_only, (dict(self),))

    def __copy__(self) -> _ReadOnlyDict:
        return self  # nothing in it can change


def _read_only(payload: Mapping[str, Any]) -> _ReadOnlyDict:
    """A read-only copy of ``payload`` (``payload`` itself when it is one already)."""
    if type(payload) is _ReadOnlyDict:
        return payload
    frozen: _ReadOnlyDict = dict.__new__(_ReadOnlyDict)
    dict.update(frozen, payload)
    return frozen


_EMPTY = _read_only({})


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who (``sub``), which session (``sid``) and what it may do.

    ``scope`` comes from the space-separated ``scope`` claim (RFC 9068 2.2.3, RFC 8693 4.2),
    ``roles`` from a ``roles`` list (RFC 9068 2.2.3.1); both are empty when absent. ``raw`` is
    the whole payload, read-only, for claims of your own.

    How and when the user authenticated (RFC 9068 2.2.1, OpenID Connect Core 2): ``amr``, the
    authentication methods (RFC 8176: ``pwd``, ``otp``, ``mfa``, ...) from an ``amr`` list,
    empty when absent; ``acr``, the authentication context class (tokenward's: ``aal1``,
    ``aal2``, ``aal3``), and ``auth_time``, when the user last actively authenticated (epoch
    seconds), both None when absent. Step-up checks read them: see ``tokenward.verify.StepUp``.

    Claims pickle, deep-copy and go through ``dataclasses.asdict`` (``raw`` as a dict), so
    they can be cached or queued.
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
    # After raw, so that claims made positionally before step-up existed still mean the same.
    amr: tuple[str, ...] = ()
    acr: str | None = None
    auth_time: int | None = None

    def __post_init__(self) -> None:
        # Whatever mapping it was given, ``raw`` is a read-only copy that pickles, deep-copies
        # and goes through ``dataclasses.asdict`` (a MappingProxyType does none of the three).
        object.__setattr__(self, "raw", _read_only(self.raw))

    def has_scopes(self, *scopes: str) -> bool:
        """True when the token grants every one of ``scopes``."""
        return all(scope in self.scope for scope in scopes)

    def has_roles(self, *roles: str) -> bool:
        """True when the token carries every one of ``roles``."""
        return all(role in self.roles for role in roles)
