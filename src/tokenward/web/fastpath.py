"""GET /auth/me and POST /auth/refresh without the framework layers: the hot requests.

A pure ASGI layer answers them with exactly the body and headers the FastAPI routes give.
``/auth/me``: the common case, a valid token of a live session (the route's response model
serialises it); anything else goes on to the route, which gives the one documented answer.
``/auth/refresh``: the same CSRF check, client and answer functions the route calls
(``same_origin``, ``client_info``, ``routes.refresh_answer``), with tokenward's errors
rendered by the one error handler's function; a cross-origin request goes on to the route,
which refuses it. Profiling showed the framework's routing, dependency and response layers
costing several times the token check, and about 45% of a refresh.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenward.app.service import AuthService
from tokenward.core.tokens import MAX_TOKEN_LENGTH
from tokenward.exceptions import TokenwardError
from tokenward.infra.logs import current_request, note_identity
from tokenward.web.deps import client_info, same_origin
from tokenward.web.problems import error_response
from tokenward.web.routes import refresh_answer, user_body

__all__ = ["FastProtectedRoute"]

_PATH = "/auth/me"
_REFRESH = "/auth/refresh"
_SCHEME = b"bearer "


def _answered(route: str) -> None:
    """Name the route in the access line (the framework's router, which would, never ran)."""
    if (request := current_request()) is not None:
        request.route = route


def _bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the one Authorization header, when it is a plain Bearer credential."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                return None  # two headers: leave the ruling to the route
            found = value
    if found is None or len(found) > MAX_TOKEN_LENGTH + len(_SCHEME):
        return None
    if found[: len(_SCHEME)].lower() != _SCHEME:
        return None
    token = found[len(_SCHEME) :]
    if not token or b" " in token:
        return None
    return token.decode("latin-1")


class FastProtectedRoute:
    def __init__(self, app: ASGIApp, *, tokenward: FastAPI) -> None:
        self.app = app
        self.tokenward = tokenward

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            if scope["method"] == "GET" and path == _PATH:
                token = _bearer_token(scope["headers"])
                if token is not None and await self._answer(token, send):
                    _answered(_PATH)
                    return
            elif (
                scope["method"] == "POST"
                and path == _REFRESH
                and await self._refresh(scope, receive, send)
            ):
                _answered(_REFRESH)
                return
        await self.app(scope, receive, send)

    async def _refresh(self, scope: Scope, receive: Receive, send: Send) -> bool:
        request = Request(scope, receive)
        try:
            await same_origin(request)
        except HTTPException:
            return False  # the route refuses it, with the documented 403
        service: AuthService = self.tokenward.state.service
        try:
            response = await refresh_answer(request, service, await client_info(request))
        except TokenwardError as error:
            response = error_response(error)
        await response(scope, receive, send)
        return True

    async def _answer(self, token: str, send: Send) -> bool:
        service: AuthService = self.tokenward.state.service
        try:
            principal = await service.sessions.authenticate(token)
        except TokenwardError:
            return False
        note_identity(principal.user.id, principal.session_id)
        body = user_body(principal.user, principal.grants).model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True
