"""Test your own service's use of :mod:`tokenward.verify` without a running tokenward.

    from tokenward.testing import TokenFactory

    tokens = TokenFactory()                      # a fresh ES256 key, issuer https://tokenward.test
    verifier = tokens.verifier()                 # a Verifier fed by a fake JWKS and revocation feed
    token = tokens.issue("alice", scope="notes:read")
    assert verifier.verify(token).sub == "alice"

    tokens.clock.advance(tokens.ttl + 60)        # time moves only when the test says so
    verifier.verify(token)                       # ExpiredTokenError

:class:`TokenFactory` signs access tokens the way tokenward does (RFC 9068: header ``typ:
at+jwt`` and ``kid``, the key's RFC 7638 thumbprint; claims ``iss``, ``sub``, ``iat``, ``exp``,
``jti``, ``sid`` and ``aud`` when an audience is set), publishes its key at
``{issuer}/.well-known/jwks.json`` and serves the revocation feed at ``{issuer}/auth/revocations``
through an ``httpx.MockTransport``: no socket is opened. :class:`FakeClock` is a
:class:`tokenward.verify.Clock` that moves by hand; pass it as ``Verifier(clock=...)``.

Like :mod:`tokenward.verify`, this module imports only the standard library, PyJWT,
cryptography and httpx: it is part of the base install and needs no server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from tokenward.verify import LEEWAY_SECONDS, Verifier

__all__ = ["Algorithm", "FakeClock", "TokenFactory"]

Algorithm: TypeAlias = Literal["ES256", "EdDSA", "RS256"]
"""The algorithms tokenward signs with (HS256 aside: it publishes no key)."""

_SigningKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

# RFC 7638 3.2: the members of a key's thumbprint (tokenward's kid), per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


class FakeClock:
    """Wall and monotonic time that move only when the test says so, never slept.

    It is a :class:`tokenward.verify.Clock` (``time()`` and ``monotonic()``), so it plugs into
    ``Verifier(clock=...)`` as it is; calling it returns :attr:`now` too, for code that takes a
    ``Callable[[], float]``.
    """

    def __init__(self, now: float | None = None, *, monotonic: float = 1000.0) -> None:
        self.now: float = time.time() if now is None else now
        """Epoch seconds: what the verifier compares ``exp``, ``iat`` and ``nbf`` with. Assign
        it to jump the wall clock (the monotonic clock does not follow)."""
        self._monotonic = monotonic

    def time(self) -> float:
        """Epoch seconds (:attr:`now`)."""
        return self.now

    def monotonic(self) -> float:
        """Seconds that never go back: the verifier's cache lifetimes and poll intervals."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never back: ``ValueError``)."""
        if seconds < 0:
            raise ValueError("a clock does not go back; set .now to move the wall clock alone")
        self.now += seconds
        self._monotonic += seconds

    def __call__(self) -> float:
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r}, monotonic={self._monotonic!r})"


def _generate(algorithm: Algorithm) -> _SigningKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"algorithm must be ES256, EdDSA or RS256, not {algorithm!r}")


def _public_jwk(key: _SigningKey, algorithm: Algorithm) -> dict[str, str]:
    """The JWK tokenward publishes for ``key``: its members, kid (the RFC 7638 thumbprint),
    alg and use."""
    jwk: dict[str, str] = json.loads(get_default_algorithms()[algorithm].to_jwk(key.public_key()))
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    jwk.update(kid=kid, alg=algorithm, use="sig")
    return jwk


class TokenFactory:
    """A stand-in tokenward: a signing key, the access tokens it signs, and its HTTP answers.

    ``issuer`` and ``audience`` are what the server's ``TOKENWARD_ISSUER`` and
    ``TOKENWARD_AUDIENCE`` would be; ``ttl`` is the access-token lifetime in seconds (900, as
    tokenward's default); tokens are issued at :attr:`clock`'s time (a fresh :class:`FakeClock`
    unless one is given). ``client_id`` and ``client_secret`` are the resource server's
    credentials the fake revocation feed accepts.
    """

    def __init__(
        self,
        issuer: str = "https://tokenward.test",
        *,
        audience: str | None = None,
        algorithm: Algorithm = "ES256",
        ttl: int = 900,
        clock: FakeClock | None = None,
        client_id: str = "resource-server",
        client_secret: str = "resource-server-secret",  # noqa: S107 - a fake's credentials
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithm: Algorithm = algorithm
        self.ttl = ttl
        self.clock = FakeClock() if clock is None else clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.private_key = _generate(algorithm)
        self.public_jwk = _public_jwk(self.private_key, algorithm)
        """The published key, as in tokenward's JWKS (``kid``, ``alg``, ``use: sig``)."""
        self.kid = self.public_jwk["kid"]
        self.revoked: list[tuple[str, int]] = []
        """The revocation log: ``(sid, revoked_at)`` in the order :meth:`revoke` added them."""
        self.requests: list[httpx.Request] = []
        """Every request the fake endpoints received, for assertions."""
        self.online = True
        """Set False to play tokenward down: every endpoint answers 503."""
        self._stranger: _SigningKey | None = None
        self._transport: httpx.MockTransport | None = None

    def __repr__(self) -> str:
        return f"TokenFactory(issuer={self.issuer!r}, algorithm={self.algorithm!r})"

    # -- tokens ----------------------------------------------------------------------------

    @property
    def jwks(self) -> dict[str, Any]:
        """The JWK Set served at :attr:`jwks_url`: ``{"keys": [public_jwk]}``."""
        return {"keys": [dict(self.public_jwk)]}

    def issue(
        self,
        sub: str = "user-1",
        *,
        sid: str | None = None,
        scope: str | Iterable[str] | None = None,
        roles: Iterable[str] | None = None,
        amr: Iterable[str] | None = None,
        acr: str | None = None,
        auth_time: float | None = None,
        ttl: int | None = None,
        issued_at: float | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An access token for ``sub``, signed as tokenward signs them.

        ``sid`` defaults to a new session id; ``scope`` (a space-separated string or names)
        and ``roles`` are added only when given, and so are what step-up checks read: ``amr``
        (RFC 8176 method names, ``["pwd", "otp"]``), ``acr`` (``"aal2"``) and ``auth_time``
        (epoch seconds, rounded up to an integer, so that ``tokens.clock.now - 300`` is at
        most 300 s old whatever the clock's fraction, and passes ``max_auth_age=300``).
        ``ttl`` and ``issued_at`` (default :attr:`clock`'s now) set ``iat`` and ``exp``.
        ``claims`` are added or replace the standard ones (``iss="..."``, ``nbf=...``); one
        given as None is left out. ``headers`` are merged into the JOSE header.
        """
        return self._issue(
            self.private_key,
            self.kid,
            sub,
            sid=sid,
            scope=scope,
            roles=roles,
            amr=amr,
            acr=acr,
            auth_time=auth_time,
            ttl=ttl,
            issued_at=issued_at,
            headers=headers,
            **claims,
        )

    def _issue(
        self,
        key: _SigningKey,
        kid: str,
        sub: str,
        *,
        sid: str | None = None,
        scope: str | Iterable[str] | None = None,
        roles: Iterable[str] | None = None,
        amr: Iterable[str] | None = None,
        acr: str | None = None,
        auth_time: float | None = None,
        ttl: int | None = None,
        issued_at: float | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        iat = int(self.clock.now if issued_at is None else issued_at)
        # tokenward's members, in its order (AccessTokenCodec.issue).
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "iat": iat,
            "exp": iat + (self.ttl if ttl is None else ttl),
            "jti": uuid.uuid4().hex,
            "sid": uuid.uuid4().hex if sid is None else sid,
        }
        if self.audience is not None:
            payload["aud"] = self.audience
        if scope is not None:
            payload["scope"] = scope if isinstance(scope, str) else " ".join(scope)
        if roles is not None:
            payload["roles"] = list(roles)
        if amr is not None:
            payload["amr"] = list(amr)
        if acr is not None:
            payload["acr"] = acr
        if auth_time is not None:
            payload["auth_time"] = math.ceil(auth_time)
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        header: dict[str, Any] = {"kid": kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(payload, key, self.algorithm, headers=header)

    # Deliberately bad tokens, each refused for one reason; keyword arguments go to issue().

    def expired(self, sub: str = "user-1", **options: Any) -> str:
        """A token whose ``exp`` passed beyond the leeway: ``ExpiredTokenError``."""
        ttl = self.ttl if options.get("ttl") is None else int(options["ttl"])
        issued_at = self.clock.now - ttl - LEEWAY_SECONDS - 1
        return self.issue(sub, **{**options, "issued_at": issued_at})

    def wrong_issuer(self, sub: str = "user-1", **options: Any) -> str:
        """A token from another issuer: ``VerificationError("bad_issuer")``."""
        return self.issue(sub, **{"iss": "https://another-issuer.test", **options})

    def unknown_kid(self, sub: str = "user-1", **options: Any) -> str:
        """A token signed by a key the JWKS does not publish: ``"unknown_kid"``."""
        stranger = self._stranger_key()
        return self._issue(stranger, _public_jwk(stranger, self.algorithm)["kid"], sub, **options)

    def bad_signature(self, sub: str = "user-1", **options: Any) -> str:
        """A token naming the published kid, signed by another key: ``"bad_signature"``."""
        return self._issue(self._stranger_key(), self.kid, sub, **options)

    def wrong_typ(self, sub: str = "user-1", **options: Any) -> str:
        """A plain ``typ: JWT`` token (an ID token, say), not an access token: ``"bad_typ"``."""
        headers = {"typ": "JWT", **(options.pop("headers", None) or {})}
        return self.issue(sub, headers=headers, **options)

    def _stranger_key(self) -> _SigningKey:
        if self._stranger is None:
            self._stranger = _generate(self.algorithm)
        return self._stranger

    # -- the fake endpoints ----------------------------------------------------------------

    @property
    def jwks_url(self) -> str:
        """``{issuer}/.well-known/jwks.json``, the Verifier's default ``jwks_url``."""
        return self.issuer.rstrip("/") + "/.well-known/jwks.json"

    @property
    def revocation_url(self) -> str:
        """``{issuer}/auth/revocations``, the feed's URL."""
        return self.issuer.rstrip("/") + "/auth/revocations"

    def revoke(self, sid: str, *, at: float | None = None) -> None:
        """End session ``sid`` (at :attr:`clock`'s now): the feed lists it from now on.

        A verifier learns of it at its next poll, which comes once more than
        ``revocation_bound / 2`` (2.5 s by default) has passed on its clock: advance the
        clock by that much before expecting ``RevokedTokenError``.
        """
        self.revoked.append((sid, int(self.clock.now if at is None else at)))

    def transport(self) -> httpx.MockTransport:
        """An ``httpx.MockTransport`` (sync and async) answering as tokenward would.

        ``GET {issuer}/.well-known/jwks.json``: :attr:`jwks`, ``Cache-Control: public,
        max-age=300``. ``GET {issuer}/auth/revocations?after=<cursor>`` with HTTP Basic
        ``client_id``/``client_secret``: ``{"revoked": [{"sid", "revoked_at"}], "cursor",
        "poll_interval": 2}``; 401 for other credentials, 400 for a cursor it never gave.
        Anything else is 404; everything is 503 while :attr:`online` is False.
        """
        if self._transport is None:
            self._transport = httpx.MockTransport(self._handle)
        return self._transport

    def verifier(self, *, feed: bool = True, **options: Any) -> Verifier:
        """A :class:`~tokenward.verify.Verifier` for this issuer and audience, on
        :meth:`transport` and :attr:`clock`, polling the fake revocation feed unless
        ``feed=False``. ``options`` are passed on (and override these). Close it after use."""
        settings: dict[str, Any] = {
            "audience": self.audience,
            "transport": self.transport(),
            "clock": self.clock,
        }
        if feed:
            settings.update(
                revocation_url=self.revocation_url,
                client_id=self.client_id,
                client_secret=self.client_secret,
            )
        settings.update(options)
        return Verifier(self.issuer, **settings)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.online:
            return httpx.Response(503, json={"detail": "tokenward is down (TokenFactory.online)"})
        url = request.url.copy_with(query=None)
        if url == httpx.URL(self.jwks_url):
            if request.method != "GET":
                return httpx.Response(405)
            return httpx.Response(
                200, json=self.jwks, headers={"Cache-Control": "public, max-age=300"}
            )
        if url == httpx.URL(self.revocation_url):
            if request.method != "GET":
                return httpx.Response(405)
            return self._revocations(request)
        return httpx.Response(404, json={"detail": "Not Found"})

    def _authenticated(self, request: httpx.Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.client_id}:{self.client_secret}"

    def _revocations(self, request: httpx.Request) -> httpx.Response:
        if not self._authenticated(request):
            return httpx.Response(
                401,
                json={"error": "invalid_client"},
                headers={"WWW-Authenticate": 'Basic realm="tokenward"'},
            )
        after = request.url.params.get("after") or ""
        if after and (not after.isdigit() or int(after) > len(self.revoked)):
            return httpx.Response(
                400, json={"error": "invalid_request", "error_description": "bad cursor"}
            )
        log = self.revoked[int(after or 0) :]
        if not after:  # the whole window: sessions whose tokens may still be valid
            horizon = self.clock.now - self.ttl - LEEWAY_SECONDS
            log = [(sid, at) for sid, at in log if at >= horizon]
        body = {
            "revoked": [{"sid": sid, "revoked_at": at} for sid, at in log],
            "cursor": str(len(self.revoked)),
            "poll_interval": 2,
        }
        return httpx.Response(200, json=body, headers={"Cache-Control": "no-store"})
