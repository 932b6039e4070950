"""Custom claims: what a deployment's hook may add to an access token, and what it may not.

The hook (``TOKENWARD_CLAIMS_HOOK``, or a function passed to the embedded app) is called at
sign-in and at every refresh with a :class:`ClaimsRequest` and returns extra claims. The
claims tokenward itself sets are reserved: the hook's values for them are dropped, never used.
The extra claims are capped in size, so that a hook cannot grow every token without bound.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tokenward.core.roles import Grants
from tokenward.core.users import User

__all__ = [
    "RESERVED_CLAIMS",
    "ClaimsHook",
    "ClaimsProblem",
    "ClaimsRequest",
    "TokenGrant",
    "custom_claims",
]

RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "typ"}  # RFC 7519, RFC 9068
    | {"client_id", "azp", "cnf", "act", "may_act"}  # who the token is for, bound to, acts as
    | {"amr", "acr", "auth_time"}  # OpenID Connect Core 2: how and when the user signed in
    | {"roles", "scope"}  # RFC 9068 2.2.3: what the user may do, tokenward's to say
)
"""Claims only tokenward sets."""


class TokenGrant(StrEnum):
    """Why an access token is being issued."""

    LOGIN = "login"
    """A sign-in (with a password, and a second factor when the user has one)."""
    REFRESH = "refresh"
    REAUTHENTICATE = "reauthenticate"
    """A signed-in user proved who they are again (a step-up)."""


@dataclass(frozen=True, slots=True)
class ClaimsRequest:
    """What the hook is told: the user, their session, their roles, and why."""

    user: User
    session_id: str
    grants: Grants
    grant: TokenGrant
    app_metadata: Mapping[str, Any] = field(default_factory=dict)
    """Set by operators and the admin API only: safe to decide on (user_metadata is not)."""

    @property
    def roles(self) -> tuple[str, ...]:
        return self.grants.roles


ClaimsHook = Callable[[ClaimsRequest], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
"""Given what is being issued, the extra claims (a plain function or a coroutine function)."""


class ClaimsProblem(StrEnum):
    """Why a hook's answer was refused (``claims.hook_failed``'s ``detail.reason``)."""

    RAISED = "raised"
    TIMED_OUT = "timed_out"
    BUSY = "busy"
    """Every thread a plain-function hook may use is still running (hung calls)."""
    NOT_A_MAPPING = "not_a_mapping"
    NOT_JSON = "not_json"
    TOO_LARGE = "too_large"


class CustomClaimsError(Exception):
    def __init__(self, problem: ClaimsProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


def custom_claims(answer: object, *, max_bytes: int) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The extra claims a hook's ``answer`` adds, and the reserved names it tried to set.

    Raises :class:`CustomClaimsError` when the answer is not a mapping of string keys, not
    JSON, or larger than ``max_bytes`` once the reserved names are dropped.
    """
    if not isinstance(answer, Mapping) or not all(isinstance(k, str) for k in answer):
        raise CustomClaimsError(ClaimsProblem.NOT_A_MAPPING)
    dropped = tuple(sorted(k for k in answer if k in RESERVED_CLAIMS))
    extra = {k: v for k, v in answer.items() if k not in RESERVED_CLAIMS}
    try:
        encoded = json.dumps(extra, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise CustomClaimsError(ClaimsProblem.NOT_JSON) from None
    if len(encoded.encode()) > max_bytes:
        raise CustomClaimsError(ClaimsProblem.TOO_LARGE)
    return json.loads(encoded), dropped
