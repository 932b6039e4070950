"""The request id, the access line and the request metrics of every request, the fast paths'
included.

The outermost layer of the app (but tracing's, with ``TOKENWARD_OTEL=on``, so that the line
carries its trace id): it sees the answers of everything inside it (the transport
defences' 413 and 408, the fast paths, the routes), gives each request its id before any of
them runs, and writes one line when the answer has gone. Plain ASGI, like RequestGuard: no
task hand-off, a few dictionary look-ups and one log call per request.
"""

from __future__ import annotations

import asyncio
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenward.infra import metrics
from tokenward.infra.clientip import ProxyTrust
from tokenward.infra.logs import (
    RequestLog,
    access_log_enabled,
    enter_request,
    leave_request,
    log_request,
    new_request_id,
)
from tokenward.verify import SYSTEM_CLOCK, Clock
from tokenward.web.problems import internal_error

__all__ = ["REQUEST_ID_HEADER", "RequestLogging", "accepted_request_id"]

REQUEST_ID_HEADER = b"x-request-id"
CLIENT_CLOSED = 499
"""The status logged for a request whose client left before it was answered (nginx's)."""
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
"""What a trusted proxy's id may look like: a UUID, a hex string, ``host:counter``; nothing
that could end a header or a log line."""


def accepted_request_id(scope: Scope, proxies: ProxyTrust) -> str | None:
    """The ``X-Request-ID`` of a request that came through a trusted proxy, when well formed.

    A client talking to the server directly could otherwise choose the id its requests are
    logged under (and make its lines look like another request's)."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            found = value
            break
    if found is None or not _REQUEST_ID.fullmatch(found):
        return None
    peer = scope.get("client")
    if not proxies.is_trusted(peer[0] if peer else None):
        return None
    return found.decode("ascii")


def _header(scope: Scope, wanted: bytes) -> list[str]:
    return [value.decode("latin-1") for name, value in scope["headers"] if name == wanted]


class RequestLogging:
    """An id on every request (and its answer); once it is answered, one access line and its
    count and duration (``tokenward_http_requests_total``, by route template)."""

    def __init__(self, app: ASGIApp, *, proxies: ProxyTrust, clock: Clock = SYSTEM_CLOCK) -> None:
        self.app = app
        self.proxies = proxies
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock.monotonic()
        record = RequestLog(accepted_request_id(scope, self.proxies) or new_request_id())
        header = (REQUEST_ID_HEADER, record.request_id.encode("ascii"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        token = enter_request(record)
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            status = status or CLIENT_CLOSED  # the client went away before an answer
            raise
        except Exception:
            if not status:
                # Answered here, not by Starlette's error handler outside this layer: with the
                # request id in the header and the body. The error goes on to the server's log.
                await internal_error()(scope, receive, send_with_id)
            raise
        finally:
            leave_request(token)
            status = status or 500
            duration = self.clock.monotonic() - started
            observed = metrics.current()
            logged = access_log_enabled()
            if observed.enabled or logged:
                if record.route is None:
                    # FastAPI's matched route (its template, never the raw path); None: a 404.
                    record.route = getattr(scope.get("route"), "path_format", None)
                observed.request(record.route, scope["method"], status, duration)
            if logged:
                self._log(scope, record, status, duration)

    def _log(self, scope: Scope, record: RequestLog, status: int, duration: float) -> None:
        peer = scope.get("client")
        address = peer[0] if peer else None
        # As web.deps.client_info sees the client's address (and as its events record it); the
        # forwarded addresses are looked for only behind a trusted proxy. Not the User-Agent:
        # free text the client writes, which may hold anything (an address, a token).
        forwarded = _header(scope, b"x-forwarded-for") if self.proxies.is_trusted(address) else []
        log_request(
            record,
            method=scope["method"],
            status=status,
            duration=duration,
            client_ip=self.proxies.client_ip(address, forwarded),
        )
