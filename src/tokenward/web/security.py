"""Transport defences: body size, time, encoding and nesting caps, security headers, the
cookie endpoints' CSRF check.

A plain ASGI middleware rather than a framework one: it sees every request first, costs one
pass over small bodies, and never lets an oversized, slow, non-UTF-8 or deeply nested body
reach a parser.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenward.infra.clientip import ProxyTrust
from tokenward.web.problems import problem_body

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "RequestGuard",
    "html_script_hashes",
    "is_allowed_origin",
    "is_utf8_text",
    "json_depth",
]

MAX_BODY_BYTES = 16 * 1024
"""Larger request bodies get 413 before anything parses them."""
MAX_JSON_DEPTH = 16
"""JSON nested deeper than this gets 422 (no parser recursion on hostile input)."""

_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_BASE_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The only bodies exempt from the UTF-8 rule: no JSON parser reads them. FastAPI parses JSON
# for application/json, application/*+json and a missing Content-Type; listing what is
# exempt rather than what is parsed leaves no spelling of a JSON type to slip through.
_FORM_TYPES = frozenset({b"application/x-www-form-urlencoded", b"multipart/form-data"})


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects in ``body``, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def is_utf8_text(body: bytes) -> bool:
    """Whether ``body`` is UTF-8 with no BOM and no NUL: the only JSON RFC 8259 (8.1) allows.

    ``json.loads`` guesses UTF-16 or UTF-32 from a BOM or NUL bytes, while ``json_depth``
    reads the bytes as UTF-8: a UTF-16 body can hide its nesting from the cap. Refusing BOMs,
    NULs and invalid UTF-8 first makes both read the same text. (UTF-16 of ASCII is valid
    UTF-8, but full of NULs; a raw NUL is never valid JSON anyway.)
    """
    if body.startswith(b"\xef\xbb\xbf") or b"\x00" in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_form(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the (first) Content-Type, as FastAPI reads it, is a form: never parsed as JSON."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() in _FORM_TYPES
    return False


def _problem(status: int, code: str, title: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(problem_body(status, code, title)).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return body, headers


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None past MAX_BODY_BYTES (whatever Content-Length claimed)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class RequestGuard:
    """Caps and headers around the whole app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool,
        html_csp: dict[str, str],
        body_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.hsts = hsts
        # Seconds from the request head to the end of its body: a slow sender holds a
        # connection and a task for at most this long, whatever the server in front does.
        self.body_timeout = body_timeout
        # Per-path CSP for the few HTML pages (each lists the hashes of its inline scripts).
        self.html_csp = {path: csp.encode() for path, csp in html_csp.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        if scope["method"] in _BODY_METHODS:
            refused = await self._buffer_body(scope, receive)
            if isinstance(refused, tuple):
                status, code, title = refused
                await self._answer(send, status, code, title)
                return
            receive = refused
        await self.app(scope, receive, send)

    async def _buffer_body(self, scope: Scope, receive: Receive) -> Receive | tuple[int, str, str]:
        too_large = (413, "payload-too-large", "Request body too large")
        length, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > MAX_BODY_BYTES:
                    return too_large
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if length == 0 and not chunked:
            return receive  # nothing to wait for, decode or measure (a refresh, a logout)
        try:
            async with asyncio.timeout(self.body_timeout):
                read = await _read_body(receive)
        except TimeoutError:
            return 408, "request-timeout", "Request body not received in time"
        if read is None:
            return too_large
        body: bytes = read
        if not _is_form(scope["headers"]) and not is_utf8_text(body):
            return 422, "invalid-request", "Request body is not UTF-8 text"
        if json_depth(body) > MAX_JSON_DEPTH:
            return 422, "invalid-request", "JSON nested too deeply"
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    @staticmethod
    async def _answer(send: Send, status: int, code: str, title: str) -> None:
        body, headers = _problem(status, code, title)
        if status == 408:
            headers.append((b"connection", b"close"))  # the rest of the body may still come
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        # The path below the mount point, when tokenward is embedded in another app.
        path: str = scope["path"].removeprefix(scope.get("root_path", ""))
        csp = self.html_csp.get(path, _API_CSP)
        # Tokens, users' data and the admin API's answers, errors included: never cached.
        auth_path = path.startswith(("/auth/", "/admin/"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(_BASE_HEADERS)
                headers.append((b"content-security-policy", csp))
                if self.hsts:
                    headers.append(_HSTS)
                if auth_path and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers


def _request_origin(request: Request, proxies: ProxyTrust) -> str:
    scheme = request.url.scheme
    peer = request.client.host if request.client else None
    forwarded_proto = request.headers.get("x-forwarded-proto")
    if forwarded_proto and proxies.is_trusted(peer):
        scheme = forwarded_proto.split(",")[0].strip().lower()
    return f"{scheme}://{request.headers.get('host', '')}"


def is_allowed_origin(
    request: Request, proxies: ProxyTrust, allowed: Iterable[str], *, public: str
) -> bool:
    """The CSRF rule of the cookie endpoints.

    With an ``Origin``: it must be the origin the request was sent to, the issuer's (public)
    origin, or a listed front-end. Without one (older browsers, non-browser clients): refused
    only when ``Sec-Fetch-Site`` says the request is cross-site.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site", "") != "cross-site"
    trusted: set[str] = {public, _request_origin(request, proxies), *allowed}
    return origin in trusted


def html_script_hashes(html: str) -> list[str]:
    """CSP source expressions for the inline scripts of a page (no 'unsafe-inline')."""
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    ]
