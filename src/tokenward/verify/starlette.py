"""An ASGI middleware that verifies the Bearer token of every request (Starlette or any ASGI app).

    from starlette.middleware import Middleware
    from tokenward.verify.starlette import BearerAuthMiddleware, StepUpMiddleware

    app = Starlette(routes=[
        Route("/me", me),
        Route("/transfers", pay, methods=["POST"], middleware=[
            Middleware(StepUpMiddleware, verifier=verifier, acr="aal2", max_auth_age=300),
        ]),
    ], middleware=[
        Middleware(BearerAuthMiddleware, verifier=verifier, public_paths=["/healthz"]),
    ])
    # in a handler: request.state.claims (a tokenward.verify.Claims)

The claims go to ``scope["state"]["claims"]``, which is ``request.state.claims`` in Starlette.
``StepUpMiddleware``, on a route or a mount behind ``BearerAuthMiddleware``, lets through only
tokens whose user authenticated strongly and recently enough (RFC 9470). Both are plain ASGI
and import nothing from Starlette, so they fit any ASGI framework.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from tokenward.verify._claims import Claims
from tokenward.verify._errors import VerificationError
from tokenward.verify._http import Denial, bearer_token, missing_credentials, refused
from tokenward.verify._stepup import StepUp
from tokenward.verify._verifier import Verifier

__all__ = ["BearerAuthMiddleware", "StepUpMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_POLICY_VIOLATION = 1008  # WebSocket close code (RFC 6455 7.4.1)


class BearerAuthMiddleware:
    """Lets a request through only with a valid token, except on ``public_paths``.

    A public path is exact (``"/healthz"``) or, ending in ``*``, a prefix (``"/docs*"``).
    Refusals: 401 with a ``WWW-Authenticate: Bearer`` challenge, 503 when tokenward cannot be
    asked; a WebSocket handshake is closed with 1008 instead.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        public_paths: Iterable[str] = (),
        realm: str | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.realm = realm or verifier.realm
        paths = list(public_paths)
        self._exact = frozenset(path for path in paths if not path.endswith("*"))
        self._prefixes = tuple(path[:-1] for path in paths if path.endswith("*"))

    def is_public(self, path: str) -> bool:
        """True for a path that needs no token."""
        return path in self._exact or path.startswith(self._prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"} or self.is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        token = bearer_token(_header(scope, b"authorization"))
        if token is None:
            await _deny(scope, send, missing_credentials(self.realm))
            return
        try:
            claims = await self.verifier.averify(token)
        except VerificationError as exc:
            await _deny(scope, send, refused(exc, self.realm))
            return
        scope.setdefault("state", {})["claims"] = claims
        await self.app(scope, receive, send)


class StepUpMiddleware:
    """Step-up authentication (RFC 9470) for the app (a route, a mount) it wraps.

    It reads the claims ``BearerAuthMiddleware`` stored, so it goes behind it. The token's
    ``acr`` must meet one of ``acr`` (a value or several; ``"aal2"`` is met by ``aal2`` and
    ``aal3``), and at most ``max_auth_age`` seconds may have passed since its ``auth_time``,
    on ``verifier``'s clock. Otherwise: 401 ``insufficient_user_authentication`` with
    ``acr_values`` and/or ``max_age`` (a WebSocket handshake is closed with 1008). A request
    without verified claims (a public path, no ``BearerAuthMiddleware`` in front) is a
    ``LookupError``: a misconfiguration, never let through.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        acr: str | Iterable[str] = (),
        max_auth_age: int | None = None,
        realm: str | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.requirement = StepUp(acr, max_auth_age)
        self.realm = realm or verifier.realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        claims = scope.get("state", {}).get("claims")
        if not isinstance(claims, Claims):
            raise LookupError("no verified token in this request: put BearerAuthMiddleware first")
        denial = self.requirement.denial(claims, self.verifier.clock, self.realm)
        if denial is not None:
            await _deny(scope, send, denial)
            return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _deny(scope: Scope, send: Send, denial: Denial) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": _POLICY_VIOLATION})
        return
    body = json.dumps({"detail": denial.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in denial.headers.items()
    ]
    await send({"type": "http.response.start", "status": denial.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
