"""GET /auth/me without the framework layers: the request every page load makes.

A pure ASGI layer answers the common case, a valid token of a live session, with exactly the
body and headers the FastAPI route gives (the route's response model serialises it). Anything
else, a missing or odd header, a refused token, an unreachable database, goes on to the route,
which gives the one documented answer for it. Profiling showed the framework's routing and
dependency layers costing several times the token check itself.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenward.app.service import AuthService
from tokenward.core.tokens import MAX_TOKEN_LENGTH
from tokenward.exceptions import TokenwardError
from tokenward.web.schemas import UserResponse

__all__ = ["FastProtectedRoute"]

_PATH = "/auth/me"
_SCHEME = b"bearer "


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
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].removeprefix(scope.get("root_path", "")) == _PATH
        ):
            token = _bearer_token(scope["headers"])
            if token is not None and await self._answer(token, send):
                return
        await self.app(scope, receive, send)

    async def _answer(self, token: str, send: Send) -> bool:
        service: AuthService = self.tokenward.state.service
        try:
            principal = await service.sessions.authenticate(token)
        except TokenwardError:
            return False
        user = principal.user
        body = (
            UserResponse(id=user.id, email=user.email, created_at=user.created_at)
            .model_dump_json()
            .encode()
        )
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
