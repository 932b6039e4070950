"""``Verifier``: the core rules, keys from a JWKS (or one static key), the revocation feed."""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import threading
import weakref
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from tokenward.verify._claims import Claims
from tokenward.verify._clock import SYSTEM_CLOCK, Clock
from tokenward.verify._core import LEEWAY_SECONDS, ParsedToken, _verify, parse_compact
from tokenward.verify._errors import VerificationError
from tokenward.verify._http import Denial
from tokenward.verify._jwks import JwksCache
from tokenward.verify._keys import KeyLike, VerifyKey, load_key
from tokenward.verify._remote import RemoteKeys, RemoteRevocations
from tokenward.verify._revocation import RevocationFeed
from tokenward.verify._stepup import StepUp

__all__ = ["Verifier"]

_HEADERS = {"User-Agent": "tokenward-verify", "Accept": "application/json"}


class _DependencySignature:
    """``inspect.signature(verifier)`` as FastAPI reads it, built (importing FastAPI) on demand,
    so that ``Depends(verifier)`` works while this module imports no framework."""

    def __get__(self, instance: object, owner: type | None = None) -> inspect.Signature:
        if instance is None:  # the class itself keeps its ordinary signature
            raise AttributeError("__signature__")
        try:
            from tokenward.verify.fastapi import dependency_signature
        except ImportError:
            raise AttributeError("__signature__") from None
        return dependency_signature()


def _check_url(url: str, what: str, insecure_http: bool) -> None:
    """Keys and revocations fetched over plain HTTP could be forged on the way: HTTPS only,
    except to a loopback address (a development server) or with ``insecure_http=True``."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and insecure_http):
        return
    if parts.scheme == "http":
        host = parts.hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
        raise ValueError(f"{what} must be https (or http on loopback, or insecure_http=True)")
    raise ValueError(f"{what} must be an http(s) URL")


class Verifier:
    """Verifies tokenward access tokens in a resource server, without a call per request.

    Keys come from ``jwks_url`` (default ``{issuer}/.well-known/jwks.json``) or from one static
    ``key``. With ``revocation_url`` and the client's credentials, ended sessions are refused
    within ``revocation_bound`` seconds. Every parameter is described in docs/verify.md.
    """

    __signature__ = _DependencySignature()

    def __init__(
        self,
        issuer: str,
        audience: str | None = None,
        jwks_url: str | None = None,
        *,
        key: KeyLike | None = None,
        algorithm: str | None = None,
        kid: str | None = None,
        leeway: int = LEEWAY_SECONDS,
        revocation_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        revocation_bound: float = 5.0,
        max_staleness: float = 60.0,
        on_stale: Literal["accept", "reject"] = "accept",
        max_token_lifetime: float = 3600.0,
        jwks_refetch_floor: float = 10.0,
        jwks_default_max_age: float = 300.0,
        jwks_max_age_limits: tuple[float, float] = (30.0, 3600.0),
        http_timeout: float = 5.0,
        realm: str = "api",
        insecure_http: bool = False,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required: every token is checked against it")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.realm = realm
        self._clock = clock
        self._keys: VerifyKey | RemoteKeys
        if key is not None:
            if jwks_url is not None:
                raise ValueError("pass jwks_url or key, not both")
            self._keys = load_key(key, algorithm=algorithm, kid=kid)
        else:
            if algorithm is not None or kid is not None:
                raise ValueError("algorithm= and kid= go with key=; a JWKS pins each key itself")
            url = jwks_url or issuer.rstrip("/") + "/.well-known/jwks.json"
            _check_url(url, "jwks_url", insecure_http)
            cache = JwksCache(
                refetch_floor=jwks_refetch_floor,
                default_max_age=jwks_default_max_age,
                max_age_limits=jwks_max_age_limits,
            )
            self._keys = RemoteKeys(url, cache, clock, http_timeout)
        self._revocations: RemoteRevocations | None = None
        if revocation_url is not None:
            self._revocations = self._feed(
                revocation_url,
                client_id,
                client_secret,
                bound=revocation_bound,
                max_staleness=max_staleness,
                on_stale=on_stale,
                max_token_lifetime=max_token_lifetime,
                timeout=http_timeout,
                insecure_http=insecure_http,
            )
        self._http_timeout = http_timeout
        self._transport = transport
        if async_transport is None and isinstance(transport, httpx.AsyncBaseTransport):
            async_transport = transport  # httpx.MockTransport serves both
        self._async_transport = async_transport
        self._client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncClient
        ] = weakref.WeakKeyDictionary()
        self._clients_lock = threading.Lock()

    def _feed(
        self,
        url: str,
        client_id: str | None,
        client_secret: str | None,
        *,
        bound: float,
        max_staleness: float,
        on_stale: Literal["accept", "reject"],
        max_token_lifetime: float,
        timeout: float,
        insecure_http: bool,
    ) -> RemoteRevocations:
        _check_url(url, "revocation_url", insecure_http)
        if not client_id or not client_secret:
            raise ValueError("the revocation feed needs client_id and client_secret")
        if on_stale not in {"accept", "reject"}:
            raise ValueError("on_stale must be 'accept' or 'reject'")
        if bound <= 0 or max_staleness < bound:
            raise ValueError("revocation_bound must be positive and max_staleness at least it")
        # Twice the leeway: the feed's clock and ours may each be off by it.
        retention = max_token_lifetime + 2 * self.leeway
        feed = RevocationFeed(bound=bound, max_staleness=max_staleness, retention=retention)
        return RemoteRevocations(
            url,
            (client_id, client_secret),
            feed,
            self._clock,
            timeout=timeout,
            on_stale=on_stale,
            max_token_lifetime=max_token_lifetime,
        )

    def __repr__(self) -> str:
        keys = self._keys
        source = keys.url if isinstance(keys, RemoteKeys) else f"static {keys.alg} key"
        return f"Verifier(issuer={self.issuer!r}, audience={self.audience!r}, keys={source!r})"

    @property
    def clock(self) -> Clock:
        """The clock this verifier reads (``clock=``): step-up checks measure ``max_age`` on it."""
        return self._clock

    @property
    def revocations(self) -> RevocationFeed | None:
        """What the revocation feed has said so far (None without a feed): for health checks."""
        return None if self._revocations is None else self._revocations.feed

    # -- verifying -------------------------------------------------------------------------

    def verify(self, token: str) -> Claims:
        """The claims of a valid token, or :class:`VerificationError`. Fetches keys and polls
        the feed inline when due (at most once per interval, with short timeouts)."""
        parsed = parse_compact(token)
        keys = self._keys
        key = keys if isinstance(keys, VerifyKey) else keys.key(parsed.kid, self._sync_client)
        claims = self._check(parsed, key)
        if self._revocations is not None:
            self._revocations.check(claims, self._sync_client)
        return claims

    async def averify(self, token: str) -> Claims:
        """:meth:`verify` for event loops: fetches and polls are awaited, never blocking."""
        parsed = parse_compact(token)
        keys = self._keys
        if isinstance(keys, VerifyKey):
            key = keys
        else:
            key = await keys.akey(parsed.kid, self._async_client)
        claims = self._check(parsed, key)
        if self._revocations is not None:
            await self._revocations.acheck(claims, self._async_client)
        return claims

    async def __call__(self, connection: Any, credentials: Any = None) -> Claims:
        """FastAPI dependency: ``user: Annotated[Claims, Depends(verifier)]``."""
        from tokenward.verify.fastapi import authenticate

        return await authenticate(self, connection)

    def step_up_denial(
        self, claims: Claims, *acr_values: str, max_auth_age: int | None = None
    ) -> Denial | None:
        """Step-up authentication (RFC 9470) for any framework: None when ``claims`` meet the
        requirement, else the 401 to answer with (``status``, ``headers`` with the
        ``insufficient_user_authentication`` challenge, ``detail``).

        The token's ``acr`` must meet one of ``acr_values`` (``"aal2"`` is met by ``aal2``
        and ``aal3``), and at most ``max_auth_age`` seconds may have passed since its
        ``auth_time``, on this verifier's clock. ``ValueError`` when neither is given.
        """
        return StepUp(acr_values, max_auth_age).denial(claims, self._clock, self.realm)

    def _check(self, parsed: ParsedToken, key: VerifyKey) -> Claims:
        if key.kid is not None and parsed.kid != key.kid:
            raise VerificationError("unknown_kid")
        return _verify(parsed, key, self.issuer, self.audience, self.leeway, self._clock.time())

    # -- readiness -------------------------------------------------------------------------

    def warm_up(self) -> bool:
        """Fetch the keys and poll the feed now rather than on the first request.

        Failures are logged, not raised (tokenward may come up later); True when ready.
        """
        if isinstance(self._keys, RemoteKeys):
            self._keys.refresh(self._sync_client, wait=True)
        if self._revocations is not None:
            self._revocations.poll(self._sync_client)
        return self.ready

    async def awarm_up(self) -> bool:
        """:meth:`warm_up` for event loops (a lifespan handler, say)."""
        if isinstance(self._keys, RemoteKeys):
            await self._keys.arefresh(self._async_client, wait=True)
        if self._revocations is not None:
            await self._revocations.apoll(self._async_client)
        return self.ready

    @property
    def ready(self) -> bool:
        """True when keys are at hand and the feed (if any) is not stale."""
        keys = not isinstance(self._keys, RemoteKeys) or self._keys.cache.fetched
        feed = self._revocations is None or not self._revocations.feed.stale(
            self._clock.monotonic()
        )
        return keys and feed

    # -- HTTP clients ----------------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        with self._clients_lock:
            if self._client is None:
                self._client = httpx.Client(
                    transport=self._transport, headers=_HEADERS, timeout=self._http_timeout
                )
            return self._client

    def _async_client(self) -> httpx.AsyncClient:
        # An AsyncClient belongs to the event loop that made it: one per loop.
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = httpx.AsyncClient(
                    transport=self._async_transport, headers=_HEADERS, timeout=self._http_timeout
                )
                self._async_clients[loop] = client
            return client

    def close(self) -> None:
        """Close the synchronous HTTP client (a later fetch opens a new one)."""
        with self._clients_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this event loop's HTTP client, and the synchronous one."""
        with self._clients_lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Verifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
