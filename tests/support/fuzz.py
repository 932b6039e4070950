"""Strategies and a harness for tests/test_fuzz.py: hostile text, mutated tokens, odd JSON.

Mutations start from a valid value and break it the way an attacker or a broken client would:
truncation, bit flips (of characters and of the decoded bytes), base64url/base64 alphabet
swaps, non-canonical last characters, segment duplication and swapping, cut-and-paste from
another valid token, huge lengths, unicode and NUL bytes. Each mutation names itself with
``hypothesis.event`` so ``--hypothesis-show-statistics`` shows what was tried.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any, TypeVar

import httpx
from asgi_lifespan import LifespanManager
from hypothesis import event
from hypothesis import strategies as st

from support import FAST_HASHER, LIFESPAN_TIMEOUT, make_settings
from tokenward.web import create_app

T = TypeVar("T")

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Characters that look like, or decode like, base64url but are not: the standard alphabet,
# padding, whitespace, NUL, a separator, and unicode that normalises or renders as ASCII.
NEAR_B64 = "+/=.~ \t\n\r\x00\x7f\u00e9\uff21\u0410\u200b\ufeff\U0001f600"
PRINTABLE_LATIN1 = "".join(chr(c) for c in (*range(0x20, 0x7F), *range(0xA0, 0x100))) + "\t"

# -- encodings -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_lenient(segment: str) -> bytes | None:
    """Decode a segment that may be damaged; None when it is not base64url at all."""
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, UnicodeEncodeError):
        return None


def latin1_bytes(text: str) -> bytes | None:
    """``text`` as header bytes, or None when it has a character HTTP header values cannot."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if any((b < 0x20 and b != 0x09) or b == 0x7F for b in raw):
        return None
    return raw


# -- JSON of every shape ---------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.sampled_from([0, -1, 2**53 + 1, 10**30, -(10**30), 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "\x00", "\ud800", "\U0001f600", "at+jwt", "ES256", "none"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=10,
)


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws. A middle value is the one compared with, since
    hypothesis favours the bounds of a range (``== 0`` would come up far more often)."""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


def dumps(value: Any, *, ensure_ascii: bool = True) -> str:
    """JSON text of ``value``; NaN and Infinity come out as the non-JSON literals."""
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True)


@st.composite
def json_object_text(
    draw: st.DrawFn,
    members: Mapping[str, Any],
    *,
    odd_values: st.SearchStrategy[Any],
    extra_names: st.SearchStrategy[str],
    intact: bool = False,
) -> str:
    """An object near ``members``: members dropped, retyped, duplicated or added, rendered
    with odd whitespace; sometimes deeply nested or not an object at all. ``intact``: only
    the rendering varies and members may be added."""
    pairs: list[tuple[str, Any]] = []
    for name, value in members.items():
        if intact:
            pairs.append((name, value))
        elif rarely(draw, 8):
            event("json: odd member value")
            pairs.append((name, draw(odd_values)))
        elif rarely(draw, 12):
            event("json: member left out")
        else:
            pairs.append((name, value))
    while rarely(draw, 3):
        event("json: extra member")
        pairs.insert(draw(st.integers(0, len(pairs))), (draw(extra_names), draw(odd_values)))
    if pairs and not intact and rarely(draw, 6):
        event("json: duplicate member")
        name, _ = draw(st.sampled_from(pairs))
        pairs.insert(draw(st.integers(0, len(pairs))), (name, draw(odd_values)))
    space = draw(st.sampled_from(["", "", " ", "\n", "\t", "\r\n  "]))
    ascii_only = draw(st.booleans())
    body = ("," + space).join(
        f"{dumps(name, ensure_ascii=ascii_only)}{space}:{space}{dumps(v, ensure_ascii=ascii_only)}"
        for name, v in pairs
    )
    text = f"{space}{{{space}{body}{space}}}{space}"
    shape = -1 if intact else draw(st.integers(0, 15))
    if shape == 7:
        event("json: nested deeply")
        depth = draw(st.sampled_from([2, 17, 500, 1000, 3000]))
        text = "[" * depth + text + "]" * depth
    elif shape == 8:
        event("json: not an object")
        text = dumps(draw(json_values))
    elif shape == 9:
        event("json: trailing data")
        text += draw(st.sampled_from(["{}", ",", "x", "\x00", " 1"]))
    return text


def text_bytes(text: str) -> bytes:
    """UTF-8, with lone surrogates kept as (invalid) bytes rather than refused."""
    return text.encode("utf-8", "surrogatepass")


# -- mutation ---------------------------------------------------------------------------------


def _position(draw: st.DrawFn, text: str, *, end: bool = False) -> int:
    return draw(st.integers(0, len(text) if end else max(len(text) - 1, 0)))


def _segments(token: str) -> list[str]:
    return token.split(".")


def _truncate(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    cut = _position(draw, token, end=True)
    return token[:cut] if draw(st.booleans()) else token[cut:]


def _delete_span(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    start = _position(draw, token)
    return token[:start] + token[start + draw(st.integers(1, 8)) :]


def _flip_char_bit(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    if not token:
        return "\x00"
    at = _position(draw, token)
    flipped = chr(ord(token[at]) ^ (1 << draw(st.integers(0, 15))))
    return token[:at] + flipped + token[at + 1 :]


def _flip_decoded_bit(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    """Flip one bit of a segment's bytes and re-encode it: still base64url, other content."""
    prefix = "twr_" if token.startswith("twr_") else ""
    segments = _segments(token.removeprefix(prefix))
    index = draw(st.integers(0, len(segments) - 1))
    raw = b64url_lenient(segments[index])
    if not raw:
        return token + "A"
    at = draw(st.integers(0, len(raw) - 1))
    changed = bytearray(raw)
    changed[at] ^= 1 << draw(st.integers(0, 7))
    segments[index] = b64url(bytes(changed))
    return prefix + ".".join(segments)


def _alphabet_swap(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    kind = draw(st.sampled_from(["standard", "near", "case", "b64url"]))
    if kind == "standard":  # base64url -> base64
        return token.replace("-", "+").replace("_", "/") + draw(st.sampled_from(["", "=", "=="]))
    if not token:
        return draw(st.sampled_from(NEAR_B64))
    at = _position(draw, token)
    if kind == "near":
        new = draw(st.sampled_from(NEAR_B64))
    elif kind == "case":
        new = token[at].swapcase()
    else:
        new = draw(st.sampled_from(B64URL))
    return token[:at] + new + token[at + 1 :]


def _noncanonical_tail(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    """Set the unused low bits of a segment's last character: same bytes, other spelling."""
    segments = _segments(token)
    index = draw(st.integers(0, len(segments) - 1))
    segment = segments[index]
    unused = {2: 0b1111, 3: 0b11}.get(len(segment) % 4)
    if not segment or unused is None or segment[-1] not in B64URL:
        return token + "=="
    value = B64URL.index(segment[-1]) | draw(st.integers(1, unused))
    segments[index] = segment[:-1] + B64URL[value]
    return ".".join(segments)


def _segment_shuffle(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    segments = _segments(token)
    index = draw(st.integers(0, len(segments) - 1))
    kind = draw(st.sampled_from(["duplicate", "drop", "swap", "empty", "append"]))
    if kind == "duplicate":
        segments.insert(draw(st.integers(0, len(segments))), segments[index])
    elif kind == "drop":
        del segments[index]
    elif kind == "swap":
        other = draw(st.integers(0, len(segments) - 1))
        segments[index], segments[other] = segments[other], segments[index]
    elif kind == "empty":
        segments[index] = ""
    else:
        segments.append(draw(st.sampled_from(["", "e30", segments[0]])))
    return ".".join(segments)


def _cut_and_paste(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    """One segment, or everything from some position on, taken from another valid token."""
    donor = draw(st.sampled_from(donors))
    if draw(st.booleans()):
        at = _position(draw, token, end=True)
        return token[:at] + donor[at:]
    mine, theirs = _segments(token), _segments(donor)
    index = draw(st.integers(0, min(len(mine), len(theirs)) - 1))
    mine[index] = theirs[index]
    return ".".join(mine)


def _insert(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    at = _position(draw, token, end=True)
    piece = draw(
        st.one_of(
            st.sampled_from(["\x00", ".", "=", " ", "\n", "%00", "\\", '"', ";", ",", "\ud800"]),
            st.text(max_size=4),
        )
    )
    return token[:at] + piece + token[at:]


def _huge(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    from tokenward.core.tokens import MAX_TOKEN_LENGTH

    kind = draw(st.sampled_from(["pad-to-limit", "repeat", "long-segment"]))
    if kind == "pad-to-limit":  # just under, at and just over the cap
        target = MAX_TOKEN_LENGTH + draw(st.sampled_from([-1, 0, 1, 1000]))
        return token + "A" * max(target - len(token), 0)
    if kind == "repeat":
        return token * draw(st.sampled_from([2, 3, 200]))
    segments = _segments(token)
    index = draw(st.integers(0, len(segments) - 1))
    segments[index] = segments[index] * draw(st.sampled_from([10, 100, 2000]))
    return ".".join(segments)


def _rewrite_json(draw: st.DrawFn, token: str, donors: Sequence[str]) -> str:
    """Decode the header or payload, change one member, re-encode; the signature stays."""
    segments = _segments(token)
    index = draw(st.integers(0, min(len(segments), 2) - 1))
    raw = b64url_lenient(segments[index])
    try:
        members = json.loads(raw or b"")
    except ValueError:
        return token + "."
    if not isinstance(members, dict):
        return token + "."
    name = draw(st.sampled_from(sorted(members) or ["x"]))
    members[name] = draw(json_values)
    segments[index] = b64url(text_bytes(dumps(members)))
    return ".".join(segments)


MUTATIONS: dict[str, Callable[[st.DrawFn, str, Sequence[str]], str]] = {
    # The first comes up most often (hypothesis favours it): the subtlest, a valid encoding.
    "flip decoded bit": _flip_decoded_bit,
    "flip character bit": _flip_char_bit,
    "non-canonical tail": _noncanonical_tail,
    "alphabet swap": _alphabet_swap,
    "cut and paste": _cut_and_paste,
    "rewrite JSON": _rewrite_json,
    "truncate": _truncate,
    "delete span": _delete_span,
    "segment shuffle": _segment_shuffle,
    "insert": _insert,
    "huge": _huge,
}


@st.composite
def mutated(draw: st.DrawFn, original: str, donors: Sequence[str] = ()) -> str:
    """``original`` after one to three mutations (``donors``: other valid tokens to paste from)."""
    names = list(MUTATIONS)
    if not donors:
        names.remove("cut and paste")
    token = original
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        event(f"mutation: {name}")
        token = MUTATIONS[name](draw, token, donors or (original,))
    return token


def hostile_text(max_size: int = 300) -> st.SearchStrategy[str]:
    """Arbitrary text, bytes read as latin-1, and text over the token alphabets."""
    return st.one_of(
        st.text(max_size=max_size),
        st.binary(max_size=max_size).map(lambda raw: raw.decode("latin-1")),
        st.text(alphabet=B64URL + ".", max_size=max_size),
        st.text(alphabet=B64URL + NEAR_B64, max_size=max_size),
        st.builds(lambda tail: "twr_" + tail, st.text(alphabet=B64URL + NEAR_B64, max_size=90)),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", *[st.text(B64URL, max_size=60)] * 3),
    )


# -- the reference rules ------------------------------------------------------------------------


class RefusedError(Exception):
    """The reference model refuses the token."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({name for name, _ in pairs}) != len(pairs):
        raise RefusedError("duplicate member")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise RefusedError(name)


_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
_TYPES = {"at+jwt", "application/at+jwt"}
_FORBIDDEN = {"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"}


def strict_object(raw: bytes) -> dict[str, Any]:
    try:
        value = _STRICT.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise RefusedError("not JSON") from None
    if type(value) is not dict:
        raise RefusedError("not an object")
    return value


def _exact_int(value: Any) -> bool:
    return type(value) is int


def reference_verdict(
    header_raw: bytes,
    payload_raw: bytes,
    *,
    alg: str,
    kid: str,
    issuer: str,
    audience: str | None,
    now: float,
    leeway: int,
) -> dict[str, Any] | None:
    """The claims tokenward must accept for a correctly signed token with these segment bytes,
    or None when it must refuse it: the rules of tokenward.verify._core's docstring, restated
    independently."""
    try:
        header = strict_object(header_raw)
        if header.get("kid") != kid or header.get("alg") != alg:
            return None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _TYPES:
            return None
        if _FORBIDDEN & set(header) or header.get("b64", True) is False:
            return None
        claims = strict_object(payload_raw)
    except RefusedError:
        return None
    if any(claims.get(name) is None for name in ("iss", "sub", "iat", "exp", "jti", "sid")):
        return None
    if claims["iss"] != issuer:
        return None
    if not all(type(claims[name]) is str and claims[name] for name in ("sub", "sid", "jti")):
        return None
    if not all(_exact_int(claims.get(name, 0)) for name in ("iat", "exp", "nbf")):
        return None
    aud = claims.get("aud")
    if audience is None and aud is not None:
        return None
    if audience is not None:
        if not aud:
            return None
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            return None
        if audience not in audiences:
            return None
    if claims["exp"] <= now - leeway:
        return None
    if claims["iat"] > now + leeway or claims.get("nbf", 0) > now + leeway:
        return None
    scope, roles = claims.get("scope"), claims.get("roles")
    if scope is not None and not isinstance(scope, str):
        return None
    if roles is not None and not (
        isinstance(roles, list) and all(isinstance(r, str) for r in roles)
    ):
        return None
    return claims


def same_json(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to itself (claims may carry NaN in extra members)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


# -- the app in-process, driven from sync tests --------------------------------------------------


class AppHarness:
    """``create_app`` (FAST_HASHER, no rate limits) on its own event loop, started once per
    test; hypothesis examples send requests through it synchronously."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        self.settings = make_settings(data_dir, rate_limits=False, **overrides)
        self.runner = asyncio.Runner()
        self.manager: LifespanManager | None = None
        self.client: httpx.AsyncClient | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def __enter__(self) -> AppHarness:
        self.run(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self.runner.close()

    async def _start(self) -> None:
        app = create_app(self.settings, hasher=FAST_HASHER)
        self.manager = LifespanManager(
            app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
        )
        await self.manager.__aenter__()
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self.client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    async def _stop(self) -> None:
        try:
            if self.client is not None:
                await self.client.aclose()
        finally:
            if self.manager is not None:
                await self.manager.__aexit__(None, None, None)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert self.client is not None
        return self.run(self.client.request(method, url, **kwargs))
