"""A deadline for each request head, for ``tokenward serve`` (slowloris).

uvicorn closes a keep-alive connection that stays silent, but not one that sends its request
head a byte every few seconds, nor a new one that sends a partial head and waits: each holds a
socket, a file descriptor and a parser for as long as the client likes, and a few thousand of
them starve the server. No uvicorn option bounds the head, so this protocol does: a connection
gets ``TOKENWARD_REQUEST_HEADER_TIMEOUT`` from its opening, and again from each response, to
deliver a complete head; past it, the connection is closed (no answer: the client may well be
an idle pre-connection, which a 408 would only confuse). The body's deadline is the
RequestGuard's (``TOKENWARD_REQUEST_BODY_TIMEOUT``, 408).

``tokenward serve`` runs uvicorn with ``http="tokenward.web.timeouts:HeadTimeoutProtocol"``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tokenward.infra.config import load_settings

__all__ = ["HeadTimeoutProtocol"]


@functools.cache
def _configured_timeout() -> float:
    """The setting, read once per worker process from the environment the app factory reads
    too (uvicorn builds the protocol before the app, and hands it no settings)."""
    return load_settings().request_header_timeout.total_seconds()


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head is too slow."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.head_timeout = _configured_timeout()
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_received()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._head_received()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer exactly when the connection now waits for a new
        # head (not when a pipelined request, whose head is in, starts instead). Unlike that
        # timer, this one is not reset by every byte received.
        if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._head_received()
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _head_received(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
