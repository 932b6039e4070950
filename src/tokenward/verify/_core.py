"""The pure core: one compact JWS access token against keys, issuer, audience and a clock.

It applies the rules of tokenward's own verification (``AccessTokenCodec.verify``), so the
server and every resource server refuse exactly the same tokens:

* at most :data:`MAX_TOKEN_LENGTH` characters, three base64url segments (no padding, no
  other character, canonical last character), header and payload UTF-8 JSON objects with no
  duplicate member names (RFC 7515 5.2) and no NaN/Infinity;
* the key is chosen by ``kid`` and the header's ``alg`` must be that key's own (RFC 8725
  3.1): ``none``, HS256 signed with a public key or any other algorithm never verify;
* ``typ`` is ``at+jwt`` or ``application/at+jwt`` (RFC 9068 2.1, case-insensitive);
* ``jku``, ``x5u``, ``jwk``, ``x5c``, ``x5t``, ``x5t#S256`` and ``crit`` headers, and
  ``b64: false``, are refused (RFC 8725 3.10);
* ``iss``, ``sub``, ``iat``, ``exp``, ``jti`` and ``sid`` are required (null counts as
  missing); ``iss`` equals the issuer; ``sub``, ``sid`` and ``jti`` are non-empty strings;
  ``iat``, ``exp`` and ``nbf`` are integers (not booleans, not floats);
* ``exp``, ``iat`` and ``nbf`` are checked against ``now`` with ``leeway`` seconds of skew;
* ``aud`` must name the audience when one is configured, and must be absent (or null) when
  none is, since a token for another audience was not meant for this one;
* the optional claims, when present (null counts as absent), are strictly typed: ``scope`` a
  string, ``roles`` and ``amr`` lists of strings, ``acr`` a non-empty string, ``auth_time`` an
  integer no later than ``now`` plus the leeway.

Nothing here does I/O or reads a clock: the caller passes keys and ``now``.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from tokenward.verify._claims import Claims
from tokenward.verify._errors import ExpiredTokenError, VerificationError
from tokenward.verify._keys import VerifyKey

__all__ = [
    "ACCESS_TOKEN_TYPES",
    "FORBIDDEN_HEADERS",
    "LEEWAY_SECONDS",
    "MAX_TOKEN_LENGTH",
    "REQUIRED_CLAIMS",
    "ParsedToken",
    "check_claims",
    "parse_compact",
    "verify_compact",
    "verify_parsed",
]

MAX_TOKEN_LENGTH = 8192
"""Longer tokens are refused before any parsing."""
LEEWAY_SECONDS = 30
"""Clock skew tolerated on exp, nbf and iat."""
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Headers that would let the token choose its own key or demand extensions (RFC 8725 3.1, 3.10).
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
REQUIRED_CLAIMS = ("iss", "sub", "iat", "exp", "jti", "sid")

# The last character of an unpadded segment carries unused low bits that must be zero, or two
# spellings of one token would both verify (RFC 4648 3.5).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
_PADDING = ("", "", "==", "=")


class _RefusedError(ValueError):
    """Raised inside the JSON decoder's hooks; turned into ``malformed``."""


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # PyJWT would keep the last of two equal names; two readers could then disagree.
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _RefusedError("duplicate member name")
    return members


def _no_constants(name: str) -> Any:
    raise _RefusedError("NaN and Infinity are not JSON")


# One decoder for all calls: json.loads(..., object_pairs_hook=) would build one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_names, parse_constant=_no_constants)


def _b64decode(segment: str) -> bytes:
    """base64url without padding, strictly: one spelling per byte string (RFC 7515 2)."""
    remainder = len(segment) % 4
    if (
        remainder == 1
        or (remainder and segment[-1] not in _CANONICAL_LAST[remainder])
        or "+" in segment  # the standard alphabet's characters would pass a2b_base64
        or "/" in segment
        or "=" in segment
    ):
        raise VerificationError("malformed", "base64url")
    standard = segment.replace("-", "+").replace("_", "/") + _PADDING[remainder]
    # Strict mode refuses every other character (whitespace, non-ASCII, ...): ValueError.
    return binascii.a2b_base64(standard, strict_mode=True)


# The C scanner behind decode(), called directly; typeshed does not declare it.
_scan_once: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _json_object(segment: str, part: str) -> dict[str, Any]:
    try:
        text = _b64decode(segment).decode("utf-8")
        try:  # the scanner alone, when the text is one JSON value and nothing around it
            value, end = _scan_once(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            value = _DECODER.decode(text)  # whitespace around the value, or the exact error
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise VerificationError("malformed", part) from None
    if type(value) is not dict:
        raise VerificationError("malformed", part)
    return value


class ParsedToken(NamedTuple):
    """A token split and its header decoded; nothing about it is trusted yet."""

    header: Mapping[str, Any]
    signing_input: bytes
    payload_segment: str
    signature: bytes
    kid: str | None
    """The header's ``kid`` when it is a string."""
    alg: Any
    """The header's ``alg`` as found (compared with the key's, never used to pick code)."""
    sound: bool
    """``typ`` is an access token's and no forbidden header is present."""


class _Header(NamedTuple):
    mapping: Mapping[str, Any]
    kid: str | None
    alg: Any
    sound: bool


def _sound(header: dict[str, Any]) -> bool:
    typ = header.get("typ")
    return (
        isinstance(typ, str)
        and typ.lower() in ACCESS_TOKEN_TYPES
        and FORBIDDEN_HEADERS.isdisjoint(header)
        and header.get("b64", True) is not False
    )


# Every token of one key has the same header segment: decoding and checking it once per key,
# not once per token, saves a fifth of the verifier's own work. Bounded, so that made-up
# headers cannot grow it.
_HEADERS: dict[str, _Header] = {}
_HEADERS_MAX = 64


def _header(segment: str) -> _Header:
    header = _HEADERS.get(segment)
    if header is None:
        decoded = _json_object(segment, "header")
        kid = decoded.get("kid")
        header = _Header(
            MappingProxyType(decoded),
            kid if isinstance(kid, str) else None,
            decoded.get("alg"),
            _sound(decoded),
        )
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[segment] = header
    return header


def parse_compact(token: str) -> ParsedToken:
    """Split a JWS compact serialisation and decode its header, strictly."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise VerificationError("too_long")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise VerificationError("malformed", "not a compact JWS")
    header_segment, payload_segment, signature_segment = parts
    header = _header(header_segment)
    try:
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
        signature = _b64decode(signature_segment)
    except ValueError:  # UnicodeEncodeError, binascii.Error
        raise VerificationError("malformed", "signature") from None
    return ParsedToken(
        header.mapping,
        signing_input,
        payload_segment,
        signature,
        header.kid,
        header.alg,
        header.sound,
    )


def _check_audience(payload: dict[str, Any], audience: str | None) -> tuple[str, ...]:
    aud = payload.get("aud")
    if audience is None:
        if aud is not None:
            raise VerificationError("bad_audience", "a token for an audience; none expected")
        return ()
    # As PyJWT does: a falsy aud is missing, a string is a list of one, every item a string.
    if not aud:
        raise VerificationError("missing_claim", "aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise VerificationError("invalid_claim", "aud")
    if audience not in audiences:
        raise VerificationError("bad_audience")
    return tuple(audiences)


def _optional_names(payload: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    scope = payload.get("scope")
    roles = payload.get("roles")
    if scope is not None and not isinstance(scope, str):
        raise VerificationError("invalid_claim", "scope")
    if roles is not None and (
        not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)
    ):
        raise VerificationError("invalid_claim", "roles")
    return (tuple(scope.split()) if scope else ()), (tuple(roles) if roles else ())


def _authentication(
    payload: dict[str, Any], leeway: int, now: float
) -> tuple[tuple[str, ...], str | None, int | None]:
    """``amr``, ``acr`` and ``auth_time``: how and when the user authenticated (RFC 9470 6.1)."""
    amr = payload.get("amr")
    acr = payload.get("acr")
    auth_time = payload.get("auth_time")
    if amr is not None and (not isinstance(amr, list) or not all(isinstance(m, str) for m in amr)):
        raise VerificationError("invalid_claim", "amr")
    if acr is not None and (not isinstance(acr, str) or not acr):
        raise VerificationError("invalid_claim", "acr")
    # type() is exact: a boolean is no NumericDate. An authentication after now cannot have been.
    if auth_time is not None and (type(auth_time) is not int or auth_time > now + leeway):
        raise VerificationError("invalid_claim", "auth_time")
    return (tuple(amr) if amr else ()), acr, auth_time


def _refusal(payload: dict[str, Any], issuer: str) -> VerificationError:
    """Why the fast path refused: the first rule broken, in the server's order."""
    for name in REQUIRED_CLAIMS:
        if payload.get(name) is None:
            return VerificationError("missing_claim", name)
    if payload["iss"] != issuer:
        return VerificationError("bad_issuer")
    for name in ("sub", "sid", "jti"):
        value = payload[name]
        if not isinstance(value, str) or not value:
            return VerificationError("invalid_claim", name)
    for name in ("iat", "exp", "nbf"):
        value = payload.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            return VerificationError("invalid_claim", name)
    return VerificationError("malformed", "claims")  # not reached: the fast path is stricter


def check_claims(
    payload: dict[str, Any], *, issuer: str, audience: str | None, leeway: int, now: float
) -> Claims:
    """The typed claims of an authenticated payload, after every claim rule."""
    return _check_claims(payload, issuer, audience, leeway, now)


def _check_claims(
    payload: dict[str, Any], issuer: str, audience: str | None, leeway: int, now: float
) -> Claims:
    get = payload.get
    sub, sid, jti, iat, exp = get("sub"), get("sid"), get("jti"), get("iat"), get("exp")
    nbf = get("nbf", 0)
    # One expression for the common case (type() is exact: it keeps bool out of int); the
    # slow path names the rule that failed.
    if not (
        type(sub) is str
        and sub
        and type(sid) is str
        and sid
        and type(jti) is str
        and jti
        and type(iat) is int
        and type(exp) is int
        and type(nbf) is int
        and get("iss") == issuer
    ):
        raise _refusal(payload, issuer)
    if audience is None and get("aud") is None:
        audiences: tuple[str, ...] = ()
    else:
        audiences = _check_audience(payload, audience)
    if exp <= now - leeway:
        raise ExpiredTokenError()
    if iat > now + leeway or nbf > now + leeway:
        raise VerificationError("not_yet_valid")
    scope: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    if get("scope") is not None or get("roles") is not None:
        scope, roles = _optional_names(payload)
    if get("acr") is not None or get("auth_time") is not None or get("amr") is not None:
        amr, acr, auth_time = _authentication(payload, leeway, now)
        return Claims(
            sub, sid, jti, issuer, iat, exp, audiences, scope, roles, payload, amr, acr, auth_time
        )
    return Claims(sub, sid, jti, issuer, iat, exp, audiences, scope, roles, payload)


def _verify(
    parsed: ParsedToken,
    key: VerifyKey,
    issuer: str,
    audience: str | None,
    leeway: int,
    now: float,
) -> Claims:
    # Positional and flat: this runs once per request, right after the signature check has
    # flushed the CPU caches, so every call and lookup saved here shows in the benchmark.
    if parsed.alg != key.alg:
        raise VerificationError("alg_mismatch")
    if not parsed.sound:
        header = parsed.header
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise VerificationError("bad_typ")
        raise VerificationError("forbidden_header")
    try:
        valid = key.algorithm.verify(parsed.signing_input, key.key, parsed.signature)
    except Exception:  # a library error on hostile bytes is a bad signature, never a crash
        valid = False
    if not valid:
        raise VerificationError("bad_signature")
    return _check_claims(
        _json_object(parsed.payload_segment, "payload"), issuer, audience, leeway, now
    )


def verify_parsed(
    parsed: ParsedToken,
    key: VerifyKey,
    *,
    issuer: str,
    audience: str | None,
    leeway: int = LEEWAY_SECONDS,
    now: float,
) -> Claims:
    """Check a parsed token with the key its kid chose: header, signature, then claims.

    The payload is decoded only once the signature has vouched for it.
    """
    return _verify(parsed, key, issuer, audience, leeway, now)


def verify_compact(
    token: str,
    keys: Mapping[str, VerifyKey],
    *,
    issuer: str,
    audience: str | None,
    leeway: int = LEEWAY_SECONDS,
    now: float,
) -> Claims:
    """Return the claims of a valid access token; raise :class:`VerificationError` otherwise.

    ``keys`` maps each kid a token may name to its key; ``now`` is epoch seconds.
    """
    parsed = parse_compact(token)
    key = keys.get(parsed.kid) if parsed.kid is not None else None
    if key is None:
        raise VerificationError("unknown_kid")
    return _verify(parsed, key, issuer, audience, leeway, now)
