"""Log lines in-process: the access line, the request id, security events, escaping.

The lines are read as ``tokenward serve`` writes them: each record rendered by the one
formatter (tokenward.infra.logs) and parsed back as JSON. A real process: test_logs_process.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import (
    COOKIE,
    FAST_HASHER,
    LIFESPAN_TIMEOUT,
    PASSWORD,
    PROBLEM,
    Api,
    FakeClock,
    make_settings,
)
from support.logcheck import Lines, captured_lines, leaks

from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.infra.logs import (
    LineFormatter,
    RequestLog,
    enter_request,
    leave_request,
    log_event,
    log_request,
)
from tokenward.web import create_app

CLIENT_IP = "203.0.113.7"  # the conftest api's peer address
EMAIL = "ada@example.com"


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Every line logged during the test, as JSON objects."""
    with captured_lines() as read:
        yield read


def _access(lines: Lines, route: str | None, method: str = "GET") -> list[dict[str, Any]]:
    return [
        line
        for line in lines()
        if line["event"] == "request" and line["route"] == route and line["method"] == method
    ]


def _events(lines: Lines, kind: EventType) -> list[dict[str, Any]]:
    return [line for line in lines() if line["event"] == "security_event" and line["type"] == kind]


async def _signed_in(api: Api) -> httpx.Response:
    assert (await api.register(EMAIL)).status_code == 201
    login = await api.login(EMAIL)
    assert login.status_code == 200
    return login


async def test_a_login_is_one_access_line_with_its_route_ids_and_timing(
    api: Api, lines: Lines
) -> None:
    """POST /auth/login: time, level, request id, route, status, duration, IP, user, session."""
    login = await _signed_in(api)
    [line] = _access(lines, "/auth/login", "POST")
    assert line["request_id"] == login.headers["x-request-id"]
    assert line["level"] == "info"
    assert line["status"] == 200
    assert line["client_ip"] == CLIENT_IP
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["time"].endswith("Z")
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None
    [succeeded] = _events(lines, EventType.LOGIN_SUCCEEDED)
    assert line["user_id"] == succeeded["user_id"] is not None
    assert line["session_id"] == succeeded["session_id"] is not None


async def test_the_fast_paths_log_their_route_and_identity(api: Api, lines: Lines) -> None:
    """GET /auth/me and POST /auth/refresh, answered without the router, are logged alike."""
    login = await _signed_in(api)
    access = login.json()["access_token"]
    me = await api.http.get("/auth/me", headers={"Authorization": f"Bearer {access}"})
    refreshed = await api.refresh(login.cookies[COOKIE])
    assert me.status_code == refreshed.status_code == 200
    [me_line] = _access(lines, "/auth/me")
    [refresh_line] = _access(lines, "/auth/refresh", "POST")
    [login_line] = _access(lines, "/auth/login", "POST")
    assert me_line["request_id"] == me.headers["x-request-id"]
    assert refresh_line["request_id"] == refreshed.headers["x-request-id"]
    for line in (me_line, refresh_line):
        assert line["status"] == 200
        assert line["user_id"] == login_line["user_id"]
        assert line["session_id"] == login_line["session_id"]
    [rotated] = _events(lines, EventType.REFRESH)
    assert rotated["request_id"] == refreshed.headers["x-request-id"]


async def test_a_route_is_its_template_and_an_unknown_path_none(api: Api, lines: Lines) -> None:
    """Never the raw path: a path parameter or a made-up path stays out of the line."""
    login = await _signed_in(api)
    access = login.json()["access_token"]
    sessions = await api.http.get("/auth/sessions", headers={"Authorization": f"Bearer {access}"})
    session_id = sessions.json()["sessions"][0]["id"]
    ended = await api.http.delete(
        f"/auth/sessions/{session_id}", headers={"Authorization": f"Bearer {access}"}
    )
    assert ended.status_code == 204
    missing = await api.http.get("/no/such/place-7f3a")
    assert missing.status_code == 404
    [line] = _access(lines, "/auth/sessions/{session_id}", "DELETE")
    assert line["status"] == 204
    [unknown] = [line for line in lines() if line.get("status") == 404]
    assert unknown["route"] is None
    everything = json.dumps(lines())
    assert "place-7f3a" not in everything
    assert f"/auth/sessions/{session_id}" not in everything


async def test_every_answer_and_problem_carries_the_request_id(api: Api, lines: Lines) -> None:
    """X-Request-ID on success and error answers; problem+json repeats it as request_id."""
    unauthorised = await api.http.get("/auth/me")
    too_large = await api.http.post("/auth/login", content=b"x" * 20_000)
    invalid = await api.http.post("/auth/login", json={"email": 1})
    for answer, status in ((unauthorised, 401), (too_large, 413), (invalid, 422)):
        assert answer.status_code == status
        assert answer.headers["content-type"] == PROBLEM
        request_id = answer.headers["x-request-id"]
        assert len(request_id) == 32
        assert answer.json()["request_id"] == request_id
    ok = await api.http.get("/.well-known/jwks.json")
    ids = {answer.headers["x-request-id"] for answer in (unauthorised, too_large, invalid, ok)}
    assert len(ids) == 4
    assert {line["request_id"] for line in lines() if line["event"] == "request"} == ids


@pytest.fixture
async def proxied(tmp_path: Path, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose address is the app's trusted proxy."""
    settings = make_settings(tmp_path / "proxied", trusted_proxies=(CLIENT_IP,))
    app = create_app(settings, clock=clock, hasher=FAST_HASHER)
    async with LifespanManager(
        app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_a_client_cannot_choose_its_request_id(api: Api, lines: Lines) -> None:
    """Without a trusted proxy in front, X-Request-ID from the request is ignored."""
    answer = await api.http.get("/healthz", headers={"X-Request-ID": "chosen-by-client"})
    assert answer.headers["x-request-id"] != "chosen-by-client"
    assert "chosen-by-client" not in json.dumps(lines())


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("edge-1:4f2c9a", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("two words", False),
        ('quote"d', False),
    ],
)
async def test_a_trusted_proxy_sets_the_request_id_when_well_formed(
    proxied: httpx.AsyncClient, sent: str, kept: bool, lines: Lines
) -> None:
    """A trusted proxy's X-Request-ID is the request's id (well formed only)."""
    answer = await proxied.get("/auth/me", headers={"X-Request-ID": sent})
    assert (answer.headers["x-request-id"] == sent) is kept
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
    [line] = _access(lines, "/auth/me")
    assert line["request_id"] == answer.headers["x-request-id"]


async def test_security_events_are_logged_once_without_personal_detail(
    api: Api, lines: Lines, clock: FakeClock
) -> None:
    """Failed and succeeded logins and a detected reuse: type, opaque ids, no IPs of others."""
    await api.register(EMAIL)
    assert (await api.login(EMAIL, "not the passphrase at all")).status_code == 401
    login = await api.login(EMAIL)
    first = login.cookies[COOKIE]
    assert (await api.refresh(first)).status_code == 200
    clock.advance(60)  # past the reuse interval
    replay = await api.refresh(first)
    assert replay.status_code == 401
    [failed] = _events(lines, EventType.LOGIN_FAILED)
    assert failed["detail"] == {"reason": "bad_credentials"}
    [succeeded] = _events(lines, EventType.LOGIN_SUCCEEDED)
    [reuse] = _events(lines, EventType.REFRESH_REUSE_DETECTED)
    assert reuse["request_id"] == replay.headers["x-request-id"]
    assert reuse["session_id"] == succeeded["session_id"]
    assert reuse["detail"]["generations_behind"] == 1
    assert "first_use" not in reuse["detail"] and "reuse" not in reuse["detail"]


async def test_hostile_input_stays_inside_one_json_string(api: Api, lines: Lines) -> None:
    """CR/LF in a User-Agent or an email cannot start a log line of its own (the User-Agent,
    free text the client writes, is not logged at all)."""
    forged = '\r\n{"event": "request", "status": 200, "forged": true}\n'
    await api.http.get("/auth/me", headers={"User-Agent": "agent ada@example.com" + forged})
    await api.http.post("/auth/register", json={"email": "x" + forged, "password": PASSWORD})
    await api.login("x" + forged + "@example.com")
    parsed = lines()  # every line parses: none was cut in two
    assert not [line for line in parsed if line.get("forged")]
    [line] = _access(lines, "/auth/me")
    assert "user_agent" not in line
    assert "agent" not in json.dumps(parsed)


def test_text_lines_escape_control_characters() -> None:
    """TOKENWARD_LOG_FORMAT=text: one line per record, CR and LF written as escapes."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(LineFormatter("text"))
    logger = logging.getLogger("tokenward.test-text")
    logging.getLogger().addHandler(handler)
    try:
        token = enter_request(RequestLog("feedc0de"))
        try:
            log_request(
                RequestLog("feedc0de", route="/auth/me"),
                method="GET",
                status=200,
                duration=0.001,
                client_ip="192.0.2.1\r\nforged",
            )
            logger.warning("quoted input: %s", "one\ntwo")
        finally:
            leave_request(token)
    finally:
        logging.getLogger().removeHandler(handler)
    access, warning = output.getvalue().splitlines()
    assert "route=/auth/me" in access
    assert "client_ip='192.0.2.1\\r\\nforged'" in access  # quoted, escaped: one line
    assert "quoted input: one\\ntwo" in warning
    assert "request_id=feedc0de" in warning


def test_a_security_event_line_names_its_type_and_ids(lines: Lines) -> None:
    """Outside a request (the outbox, the CLI) an event line simply has no request id."""
    log_event(
        NewEvent(
            EventType.SESSION_REVOKED,
            datetime.fromisoformat("2026-01-01T00:00:00+00:00"),
            ClientInfo("192.0.2.9", "agent"),
            user_id="u-1",
            session_id="s-1",
            detail={"by": "user"},
        )
    )
    [line] = lines()
    assert line["type"] == "session.revoked"
    assert (line["user_id"], line["session_id"], line["client_ip"]) == ("u-1", "s-1", "192.0.2.9")
    assert "request_id" not in line
    assert list(line)[:3] == ["time", "level", "event"]


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ('{"email": "ada@example.com"}', ["email address"]),
        ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", ["JWT"]),
        ("cookie twr_AAAAAAAAAAAAAAAAAAAAAA.1", ["tokenward token"]),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", ["password hash"]),
        (PASSWORD, ["password"]),
        (
            '{"time": "2026-12-06T13:09:47.118467Z", "event": "request", "route": '
            '"/auth/sessions/{session_id}", "user_id": "07be6e70-7a9c-4b8c-aa6e-da626d01140b"}',
            [],
        ),
        ("retrying a transaction after a conflict (40001); twr_ prefix, user@host", []),
        ('{"detail": {"by": "admin_api", "client_id": "twc_AOLIJVCPh2BQ58Ba"}}', []),
    ],
)
def test_the_leak_check_finds_secrets_and_passes_ordinary_lines(
    line: str, found: list[str]
) -> None:
    """The suite-wide check (tests/support/logcheck.py) is precise both ways."""
    assert leaks(line) == found


async def test_the_token_endpoint_names_the_user_and_session(api: Api, lines: Lines) -> None:
    """POST /auth/token (RFC 6749 password grant) is logged with the session it started."""
    await api.register(EMAIL)
    answer = await api.http.post(
        "/auth/token", data={"grant_type": "password", "username": EMAIL, "password": PASSWORD}
    )
    assert answer.status_code == 200
    [line] = _access(lines, "/auth/token", "POST")
    [succeeded] = _events(lines, EventType.LOGIN_SUCCEEDED)
    assert (line["user_id"], line["session_id"]) == (succeeded["user_id"], succeeded["session_id"])


async def test_a_development_mail_is_kept_not_logged(tmp_path: Path, lines: Lines) -> None:
    """TOKENWARD_EMAIL_DELIVERY=log (development's default): the line says a mail was kept,
    with its subject; the recipient and the link are in the mailbox only."""
    settings = make_settings(tmp_path / "data", email_verification="optional", rate_limits=False)
    assert settings.mail_delivery == "log"
    app = create_app(settings, hasher=FAST_HASHER)
    async with LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            registered = await client.post(
                "/auth/register", json={"email": EMAIL, "password": PASSWORD}
            )
            assert registered.status_code == 201
            deadline = asyncio.get_running_loop().time() + 10
            while not (mails := (await client.get("/demo/mailbox")).json()):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
    [mail] = mails
    assert mail["to"] == EMAIL and "twv_" in mail["text"]
    [kept] = [line for line in lines() if str(line["event"]).startswith("development mail")]
    assert mail["subject"] in kept["event"] and "/demo/mailbox" in kept["event"]
    assert not leaks(json.dumps(kept))


async def test_an_unhandled_error_answers_500_with_its_request_id(
    tmp_path: Path, lines: Lines
) -> None:
    """The id reaches the client (header and body) and the log; the error's message, which may
    quote data, reaches neither."""
    app = create_app(make_settings(tmp_path / "data"), hasher=FAST_HASHER)

    async def boom() -> None:
        raise RuntimeError(f"failed for {EMAIL} with twp_{'x' * 20}")

    app.add_api_route("/boom", boom)
    async with LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get("/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == PROBLEM
    assert answer.json()["type"] == "urn:tokenward:problem:internal-error"
    request_id = answer.headers["x-request-id"]
    assert answer.json()["request_id"] == request_id
    assert EMAIL not in answer.text
    [line] = _access(lines, "/boom")
    assert (line["request_id"], line["status"]) == (request_id, 500)
    for logged in lines():
        assert EMAIL not in json.dumps(logged) and "twp_" not in json.dumps(logged)
    assert any(logged["event"] == "unhandled error: RuntimeError" for logged in lines())


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_traceback_keeps_its_frames_and_types_not_its_messages(log_format: str) -> None:
    """uvicorn logs an unhandled error with its traceback: a message may quote a statement's
    parameters or an address, so each in the chain is withheld."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(LineFormatter(log_format))  # type: ignore[arg-type]
    logger = logging.getLogger(f"uvicorn.error.test-{log_format}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise KeyError(EMAIL)
        except KeyError as error:
            raise ValueError(f"twp_{'y' * 20}") from error
    except ValueError:
        logger.exception("Exception in ASGI application")
    finally:
        logger.removeHandler(handler)
    [line] = output.getvalue().splitlines()
    assert "builtins.KeyError (message withheld)" in line
    assert "builtins.ValueError (message withheld)" in line
    assert "test_a_traceback_keeps_its_frames_and_types_not_its_messages" in line
    assert not leaks(line.replace("raise KeyError(EMAIL)", ""))
