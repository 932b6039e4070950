"""Issue 13: ambiguous refresh cookies, the docs page, non-UTF-8 JSON, slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message
from support import COOKIE, PROBLEM, Api, counts, make_settings, server_process

from tokenward.exceptions import ConfigError
from tokenward.infra.config import load_settings
from tokenward.web.app import SWAGGER_UI_VERSION
from tokenward.web.routes import cookie_path
from tokenward.web.security import MAX_JSON_DEPTH, RequestGuard, is_utf8_text, json_depth

PRODUCTION = {"env": "production", "issuer": "https://auth.example"}
HOST_COOKIE = "__Host-tw_refresh"


def assert_invalid_token(response: httpx.Response) -> None:
    """The answer to a bad refresh cookie: 401 invalid-token, the cookie cleared."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:tokenward:problem:invalid-token"
    assert any(h.startswith(f'{COOKIE}=""') for h in response.headers.get_list("set-cookie"))


# -- 1. one refresh cookie, or none --------------------------------------------------------


@pytest.mark.parametrize("planted_first", [True, False])
async def test_two_refresh_cookies_in_one_header_are_refused(
    api: Api, service: Any, planted_first: bool
) -> None:
    """A sibling subdomain plants a second tw_refresh: neither is used, in either order."""
    _, token = await api.signed_up()
    _, planted = await api.signed_up("mallory@example.com")
    pair = [planted, token] if planted_first else [token, planted]
    header = f"{COOKIE}={pair[0]}; {COOKIE}={pair[1]}"
    before = await counts(service)
    assert_invalid_token(await api.http.post("/auth/refresh", headers={"Cookie": header}))
    assert await counts(service) == before  # neither session rotated
    assert (await api.refresh(token)).status_code == 200


async def test_two_refresh_cookies_across_cookie_headers_are_refused(
    api: Api, service: Any
) -> None:
    _, token = await api.signed_up()
    headers = [("cookie", f"{COOKIE}={token}"), ("cookie", f"a=b; {COOKIE}=twr_planted")]
    before = await counts(service)
    assert_invalid_token(await api.http.post("/auth/refresh", headers=headers))
    assert await counts(service) == before


async def test_one_refresh_cookie_in_any_cookie_header_is_read(api: Api) -> None:
    """Cookies split over several headers (HTTP/2 crumbs) count as one list."""
    _, token = await api.signed_up()
    headers = [("cookie", "a=b"), ("cookie", f"{COOKIE}={token}; c=d")]
    assert (await api.http.post("/auth/refresh", headers=headers)).status_code == 200


async def test_logout_with_two_refresh_cookies_ends_nothing(api: Api) -> None:
    _, token = await api.signed_up()
    _, planted = await api.signed_up("mallory@example.com")
    response = await api.http.post(
        "/auth/logout", headers={"Cookie": f"{COOKIE}={planted}; {COOKIE}={token}"}
    )
    assert response.status_code == 204
    assert response.headers["set-cookie"].startswith(f'{COOKIE}=""')
    assert (await api.refresh(token)).status_code == 200
    assert (await api.refresh(planted)).status_code == 200


async def test_the_token_endpoint_ignores_cookies(api: Api) -> None:
    _, token = await api.signed_up()
    response = await api.http.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers={"Cookie": f"{COOKIE}=a; {COOKIE}=b"},
    )
    assert response.status_code == 200, response.text


def set_cookie(response: httpx.Response, name: str) -> str:
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]
    return header


@pytest.mark.parametrize("settings_overrides", [{**PRODUCTION, "cookie_host_prefix": True}])
async def test_host_prefixed_cookie(api: Api) -> None:
    """__Host-: Secure, Path=/ and no Domain, as browsers require; read back by that name."""
    await api.register("ada@example.com")
    login = await api.login("ada@example.com")
    header = set_cookie(login, HOST_COOKIE)
    attributes = [part.strip().lower() for part in header.split(";")[1:]]
    assert "path=/" in attributes
    assert "secure" in attributes
    assert "httponly" in attributes
    assert not any(a.startswith("domain") for a in attributes)
    token = header.split(";", 1)[0].split("=", 1)[1]
    for name in (COOKIE, "__Secure-tw_refresh"):  # other names are no refresh cookie
        refused = await api.http.post("/auth/refresh", headers={"Cookie": f"{name}={token}"})
        assert refused.status_code == 401
        assert "path=/;" in set_cookie(refused, HOST_COOKIE).lower()
    refreshed = await api.http.post("/auth/refresh", headers={"Cookie": f"{HOST_COOKIE}={token}"})
    assert refreshed.status_code == 200
    assert "path=/;" in set_cookie(refreshed, HOST_COOKIE).lower()


def test_host_prefixed_cookie_path_is_root_even_when_embedded(tmp_path: Path) -> None:
    request = Request({"type": "http", "root_path": "/id", "headers": []})
    plain = make_settings(tmp_path)
    host = make_settings(tmp_path, cookie_host_prefix=True, **PRODUCTION)
    assert cookie_path(request, plain) == "/id/auth"
    assert cookie_path(request, host) == "/"


def test_host_prefix_needs_a_secure_cookie() -> None:
    with pytest.raises(ConfigError, match="TOKENWARD_COOKIE_HOST_PREFIX"):
        load_settings(_env_file=None, cookie_host_prefix=True)
    cross_site = load_settings(
        _env_file=None,
        cookie_host_prefix=True,
        cookie_samesite="none",
        allowed_origins="https://app.example",
    )
    assert cross_site.refresh_cookie_name == HOST_COOKIE
    assert cross_site.secure_cookie
    assert load_settings(_env_file=None, cookie_host_prefix=True, **PRODUCTION).secure_cookie


# -- 2. the docs page ----------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [PRODUCTION])
async def test_production_serves_no_docs_page(api: Api) -> None:
    response = await api.http.get("/docs")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    # The API description stays: public, and what clients and fuzzers read.
    assert (await api.http.get("/openapi.json")).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{**PRODUCTION, "api_docs": True}])
async def test_production_serves_the_docs_page_when_asked(api: Api) -> None:
    assert (await api.http.get("/docs")).status_code == 200


def test_api_docs_default() -> None:
    assert load_settings(_env_file=None).serves_api_docs
    assert not load_settings(_env_file=None, **PRODUCTION).serves_api_docs
    assert not load_settings(_env_file=None, api_docs=False).serves_api_docs


async def test_docs_page_pins_its_cdn_files_by_version_and_sri(api: Api) -> None:
    response = await api.http.get("/docs")
    assert response.status_code == 200
    page = response.text
    assert re.fullmatch(r"\d+\.\d+\.\d+", SWAGGER_UI_VERSION)
    tags = re.findall(r"<(?:script|link)\b[^>]*\b(?:src|href)=\"https://[^>]*>", page)
    tags = [tag for tag in tags if 'rel="shortcut icon"' not in tag]
    assert len(tags) == 2, tags  # the bundle and its stylesheet
    csp = response.headers["content-security-policy"]
    for tag in tags:
        url = re.search(r"(?:src|href)=\"([^\"]+)\"", tag)
        assert url is not None
        assert url[1].startswith(
            f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}/"
        )
        assert re.search(r'\bintegrity="sha384-[A-Za-z0-9+/]{64}"', tag), tag
        assert 'crossorigin="anonymous"' in tag
        assert url[1] in csp  # the CSP names the pinned file itself, not the whole CDN
    assert "script-src https://cdn.jsdelivr.net " not in csp
    assert "unsafe-inline" not in csp


# -- 3. JSON bodies are UTF-8 --------------------------------------------------------------


def nested_utf16() -> bytes:
    """Deep JSON in UTF-16-LE whose string holds U+2200, encoded 00 22: json_depth, reading
    bytes, takes that 22 for a quote, then the closing quote for an opening one, and misses
    every bracket after it."""
    depth = 3000  # 12 KB, under the size cap; past the parser's recursion limit
    return ('["\u2200", ' + "[" * depth + "]" * depth + "]").encode("utf-16-le")


def test_the_utf16_body_would_slip_past_the_nesting_cap() -> None:
    body = nested_utf16()
    assert json_depth(body) <= MAX_JSON_DEPTH
    assert not is_utf8_text(body)


@pytest.mark.parametrize(
    "body",
    [
        nested_utf16(),
        ("[" * 100 + "]" * 100).encode("utf-16"),  # with a BOM
        ("[" * 100 + "]" * 100).encode("utf-32-be"),
        b'\xef\xbb\xbf{"email": "ada@example.com", "password": "a long enough passphrase 7"}',
        b'{"email": "ada@example.com", "password": "caf\xe9 caf\xe9 caf\xe9 caf\xe9"}',
        b'{"email": "ada@example.com", "password": "x\x00"}',
    ],
    ids=["utf16-le-nested", "utf16-bom", "utf32-be", "utf8-bom", "latin1", "nul"],
)
@pytest.mark.parametrize(
    "content_type", ["application/json", "application/merge-patch+json", "text/plain", None]
)
async def test_non_utf8_bodies_are_refused_before_parsing(
    api: Api, service: Any, body: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/auth/register", "/auth/login"):
        response = await api.http.post(path, content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"] == "urn:tokenward:problem:invalid-request"
        assert "UTF-8" in problem["title"]
    assert await counts(service) == (0, 0, 0)


async def test_utf8_json_and_form_bodies_still_pass(api: Api) -> None:
    password = "pässwörd ünd mehr, lang genug"
    assert (await api.register("ada@example.com", password)).status_code == 201
    assert (await api.login("ada@example.com", password)).status_code == 200
    form = await api.http.post(
        "/auth/token",
        data={"grant_type": "password", "username": "ada@example.com", "password": password},
    )
    assert form.status_code == 200, form.text
    # A form is never parsed as JSON: raw Latin-1 bytes in it are the grant's business.
    latin1 = await api.http.post(
        "/auth/token",
        content=b"grant_type=password&username=ada%40example.com&password=p\xe4sswort",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert latin1.status_code == 400
    assert latin1.json()["error"] == "invalid_grant"


# -- 4. slow clients -----------------------------------------------------------------------


async def test_the_guard_answers_408_to_a_body_that_stalls() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pytest.fail("the app saw a request whose body never arrived")

    messages = [{"type": "http.request", "body": b'{"email', "more_body": True}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    guard = RequestGuard(app, hsts=False, html_csp={}, body_timeout=0.2)
    scope = {"type": "http", "method": "POST", "path": "/auth/login", "headers": []}
    started = time.monotonic()
    await asyncio.wait_for(guard(scope, receive, send), 5)
    assert time.monotonic() - started < 2
    assert sent[0]["status"] == 408
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close"
    assert b"urn:tokenward:problem:request-timeout" in sent[1]["body"]


TIMEOUT = 2  # seconds, the setting under test
BOUND = TIMEOUT + 6  # generous: a loaded machine is slow to notice, never early


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=BOUND)
    sock.settimeout(0.25)
    return sock


def closed(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (whatever it sent before)."""
    try:
        while data := sock.recv(65536):
            del data
        return True
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


def test_serve_closes_connections_whose_request_head_is_too_slow(tmp_path: Path) -> None:
    """Half a head and silence, a head one byte at a time, and the same after a first
    request on a kept-alive connection: each is closed soon after the timeout."""
    env = {"TOKENWARD_REQUEST_HEADER_TIMEOUT": str(TIMEOUT)}
    with server_process(tmp_path / "data", **env) as server:
        started = time.monotonic()
        silent, trickle, kept = (connect(server.base) for _ in range(3))
        silent.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        open_ = {"silent": silent, "trickle": trickle, "kept": kept}
        ended: dict[str, float] = {}
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        sent = 0
        while open_ and time.monotonic() - started < BOUND:
            for name, sock in list(open_.items()):
                if name != "silent":
                    with contextlib.suppress(OSError):  # closed: seen just below
                        sock.send(head[sent : sent + 1])
                if closed(sock):
                    ended[name] = time.monotonic() - started
                    del open_[name]
            sent += 1
        for sock in (silent, trickle, kept):
            sock.close()
        assert not open_, f"still open after {BOUND} s: {sorted(open_)}"
        assert all(seconds > TIMEOUT / 2 for seconds in ended.values()), ended
        assert httpx.get(f"{server.base}/healthz").status_code == 200


def test_serve_answers_408_to_a_body_that_is_too_slow(tmp_path: Path) -> None:
    env = {"TOKENWARD_REQUEST_BODY_TIMEOUT": str(TIMEOUT)}
    with server_process(tmp_path / "data", **env) as server:
        sock = connect(server.base)
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"email": '
        )
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < BOUND:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"urn:tokenward:problem:request-timeout" in answer
        assert TIMEOUT / 2 < elapsed < BOUND  # and the connection was closed after it
