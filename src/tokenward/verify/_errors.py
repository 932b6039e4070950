"""The one exception a refused token raises, and the reasons it carries.

Under tokenward's root error (``tokenward.exceptions.TokenwardError``, which imports nothing):

VerificationError              the token is refused: 401 ``invalid_token``
├── ExpiredTokenError          reason ``expired``
├── RevokedTokenError          reason ``revoked``: its session ended (revocation feed)
└── VerifierUnavailableError   ``keys_unavailable`` / ``revocations_unavailable``: the
                               verifier cannot decide now (tokenward unreachable): 503
"""

from __future__ import annotations

from tokenward.exceptions import TokenwardError

__all__ = [
    "REASONS",
    "ExpiredTokenError",
    "RevokedTokenError",
    "VerificationError",
    "VerifierUnavailableError",
]

REASONS = frozenset(
    {
        "too_long",  # over MAX_TOKEN_LENGTH characters, or not a string
        "malformed",  # not three base64url segments of JSON objects, duplicate names, ...
        "unknown_kid",  # no published (or configured) key has the token's kid
        "alg_mismatch",  # the header's alg is not the one its key is pinned to
        "bad_typ",  # typ is not at+jwt (RFC 9068 2.1)
        "forbidden_header",  # jku, x5u, jwk, x5c, x5t, x5t#S256, crit or b64=false
        "bad_signature",
        "missing_claim",  # iss, sub, iat, exp, jti or sid absent or null
        "invalid_claim",  # a claim of the wrong type, an empty string, auth_time in the future
        "bad_issuer",
        "bad_audience",
        "expired",
        "not_yet_valid",  # iat or nbf in the future beyond the leeway
        "lifetime_too_long",  # exp - iat beyond max_token_lifetime (revocation feed on)
        "revoked",
        "keys_unavailable",  # no key set could be fetched yet
        "revocations_unavailable",  # feed stale beyond the limit and on_stale="reject"
    }
)
"""Every ``reason`` a :class:`VerificationError` can carry: a stable vocabulary for logs."""


class VerificationError(TokenwardError):
    """A token was refused; ``reason`` (one of :data:`REASONS`) says why, for logs only.

    The message holds the reason and at most the name of a claim or header: never the token
    nor a value read from it, so logging ``str(error)`` is safe.
    """

    status = 401
    problem = "invalid-token"
    title = "Invalid token"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ExpiredTokenError(VerificationError):
    """The token's ``exp`` has passed (beyond the leeway)."""

    def __init__(self) -> None:
        super().__init__("expired")


class RevokedTokenError(VerificationError):
    """The token's session (``sid``) was ended and the revocation feed said so."""

    def __init__(self) -> None:
        super().__init__("revoked")


class VerifierUnavailableError(VerificationError):
    """tokenward could not be reached to decide: the framework glue answers 503, not 401."""

    status = 503
    problem = "unavailable"
    title = "Service unavailable"
