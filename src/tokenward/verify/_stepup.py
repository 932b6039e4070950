"""Step-up authentication (RFC 9470): did the user authenticate strongly and recently enough?

A resource states what it needs as a :class:`StepUp`: acceptable authentication context
classes (``acr_values``, checked against the token's ``acr``) and/or a ``max_age`` in seconds
(checked against the token's ``auth_time``). A token that falls short is valid but not enough:
the answer is 401 ``insufficient_user_authentication`` naming the requirement, so the client
can ask tokenward for a new token that meets it (the framework glue does this; see
``docs/verify.md``).

tokenward's ACR values are NIST SP 800-63B's authenticator assurance levels, ordered
``aal1 < aal2 < aal3``: a stronger level satisfies a weaker requirement, so ``aal2`` is met by
``aal2`` and ``aal3``. Any other value (a URI of another issuer's, say) is only met by itself.

The rule reads no time of its own: ``max_age`` is measured on the clock it is given (the
verifier's), and the clock is read only when there is a ``max_age`` to check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenward.verify._claims import Claims
from tokenward.verify._clock import Clock
from tokenward.verify._http import Denial, insufficient_user_authentication

__all__ = [
    "ACR_LEVELS",
    "LEVEL_AND_RECENCY_REQUIRED",
    "LEVEL_REQUIRED",
    "RECENCY_REQUIRED",
    "StepUp",
    "acr_satisfies",
]

ACR_LEVELS = ("aal1", "aal2", "aal3")
"""tokenward's ACR values, weakest first (NIST SP 800-63B): each satisfies those before it."""
_RANK = {level: rank for rank, level in enumerate(ACR_LEVELS)}

# The error_description of the challenge (the first two are RFC 9470's own examples).
LEVEL_REQUIRED = "A different authentication level is required"
RECENCY_REQUIRED = "More recent authentication is required"
LEVEL_AND_RECENCY_REQUIRED = (
    "A different authentication level and more recent authentication are required"
)


def acr_satisfies(acr: str | None, acr_values: Iterable[str]) -> bool:
    """True when ``acr`` (a token's) meets one of ``acr_values``: it is that value, or a higher
    level of :data:`ACR_LEVELS` (``aal3`` meets ``aal2``). None meets nothing."""
    if acr is None:
        return False
    if isinstance(acr_values, str):  # one value, not its characters
        acr_values = (acr_values,)
    rank = _RANK.get(acr)
    for wanted in acr_values:
        if acr == wanted:
            return True
        needed = _RANK.get(wanted)
        if rank is not None and needed is not None and rank >= needed:
            return True
    return False


def _acr_value(value: object) -> str:
    # acr_values is space-separated in the challenge (RFC 9470 3) and goes in a quoted-string:
    # visible ASCII only, neither a space nor a quote nor a backslash.
    if not isinstance(value, str) or not value or not value.isascii():
        raise ValueError(f"an ACR value must be a non-empty ASCII string, not {value!r}")
    if not value.isprintable() or " " in value or '"' in value or "\\" in value:
        raise ValueError(f"an ACR value cannot hold spaces, quotes or backslashes: {value!r}")
    return value


@dataclass(frozen=True, slots=True, init=False)
class StepUp:
    """What a resource requires of the user's authentication (RFC 9470).

    ``acr_values``: the token's ``acr`` must meet one of them (:func:`acr_satisfies`); one
    value may be given as a string. ``max_age``: at most this many seconds may have passed
    since the token's ``auth_time`` (``now - auth_time <= max_age``); a token without
    ``auth_time`` falls short. At least one of the two is required.

    Made once (at import time, in the glue) and shared: immutable and cheap to check.
    """

    acr_values: tuple[str, ...]
    max_age: int | None

    def __init__(self, acr_values: str | Iterable[str] = (), max_age: int | None = None) -> None:
        values = (acr_values,) if isinstance(acr_values, str) else tuple(acr_values)
        for value in values:
            _acr_value(value)
        if max_age is not None and (type(max_age) is not int or max_age < 0):
            raise ValueError(f"max_age must be a non-negative integer of seconds, not {max_age!r}")
        if not values and max_age is None:
            raise ValueError("a step-up requirement needs acr values, a max_age, or both")
        object.__setattr__(self, "acr_values", values)
        object.__setattr__(self, "max_age", max_age)

    def shortfall(self, claims: Claims, clock: Clock) -> str | None:
        """None when ``claims`` meet the requirement; otherwise what fell short, as the
        challenge's ``error_description``."""
        weak = bool(self.acr_values) and not acr_satisfies(claims.acr, self.acr_values)
        stale = False
        if self.max_age is not None:
            auth_time = claims.auth_time
            stale = auth_time is None or clock.time() - auth_time > self.max_age
        if weak:
            return LEVEL_AND_RECENCY_REQUIRED if stale else LEVEL_REQUIRED
        return RECENCY_REQUIRED if stale else None

    def denial(self, claims: Claims, clock: Clock, realm: str) -> Denial | None:
        """None when ``claims`` meet the requirement; otherwise the 401
        ``insufficient_user_authentication`` answer, naming the whole requirement (both
        ``acr_values`` and ``max_age`` when both are set, whichever fell short), so that the
        client's next authorization request asks for everything at once."""
        description = self.shortfall(claims, clock)
        if description is None:
            return None
        return insufficient_user_authentication(realm, self.acr_values, self.max_age, description)
