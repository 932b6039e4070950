"""Traces in-process (TOKENWARD_OTEL, the tokenward[otel] extra): spans for requests and SQL
statements, a request's ``traceparent`` continued, and the trace's ids in the log lines.

OpenTelemetry's global TracerProvider can be set once per process: the module sets one with an
in-memory exporter, which tokenward keeps (an embedding app's provider is used as it is), and
empties it before each test.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text
from support import COOKIE, PASSWORD, Api, make_settings, refresh_cookie
from support.logcheck import Lines, captured_lines

from tokenward.exceptions import ConfigError
from tokenward.infra import tracing
from tokenward.infra.config import Settings
from tokenward.infra.logs import LineFormatter
from tokenward.infra.metrics import UNMATCHED
from tokenward.infra.tracing import (
    check_tracing,
    configure_tracing,
    current_trace_ids,
    trace_requests,
    tracing_enabled,
)
from tokenward.web.fastpath import FastProtectedRoute

EMAIL = "ada@example.com"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
LINK_TOKEN = "twv_QUERYSTRINGTOKEN0123456789abcdef"  # the shape of a mailed link's token
PEER = "203.0.113.7"  # the api fixture's client address
USER_AGENT = "secret-agent/1.0 ada@example.com"
OLD_ATTRIBUTES = {
    "http.scheme",
    "http.host",
    "net.host.port",
    "http.flavor",
    "http.method",
    "http.status_code",
    "http.route",
    "http.target",
    "http.url",
}
"""A request span's attributes in OpenTelemetry's old HTTP conventions (the default), all of
them: none is the request's but its method and (as its route template) path."""
NEW_ATTRIBUTES = {
    "url.scheme",
    "server.address",
    "server.port",
    "network.protocol.version",
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "url.path",
}
"""The same in the stable conventions (OTEL_SEMCONV_STABILITY_OPT_IN=http)."""
SERVER_ATTRIBUTES = {
    "": OLD_ATTRIBUTES,
    "http": NEW_ATTRIBUTES,
    "http/dup": OLD_ATTRIBUTES | NEW_ATTRIBUTES,
}
ROUTE_ATTRIBUTES = ("http.route", "http.target", "http.url", "url.path")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """TOKENWARD_OTEL=on for the app of each test (the off test says otherwise)."""
    return {"otel": True}


@pytest.fixture(scope="module", autouse=True)
def provider() -> Iterator[InMemorySpanExporter]:
    """The process's TracerProvider (set here unless one is set already), exporting to memory:
    no test of the module exports anywhere else."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
    exporter = InMemorySpanExporter()
    current.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # later spans of the process, if any, are not kept


@pytest.fixture(autouse=True)
def _tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing starts off in each test (the app's create_app turns it on) and is off again
    after it, as in a process that never turned it on: the rest of the suite is not traced.
    No OTEL_* variable of the developer's applies."""
    monkeypatch.setattr(tracing, "_current_span", None)
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def spans(provider: InMemorySpanExporter) -> Iterator[Callable[[], list[ReadableSpan]]]:
    """The spans ended during the test."""
    provider.clear()
    yield lambda: list(provider.get_finished_spans())
    provider.clear()


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Every line logged during the test, as JSON objects."""
    with captured_lines() as read:
        yield read


def _hex(number: int, digits: int) -> str:
    return format(number, f"0{digits}x")


def _access(lines: Lines, route: str | None, method: str = "GET") -> dict[str, Any]:
    [line] = [
        line
        for line in lines()
        if line["event"] == "request" and line["route"] == route and line["method"] == method
    ]
    return line


@pytest.fixture(params=SERVER_ATTRIBUTES)
def semconv(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """OTEL_SEMCONV_STABILITY_OPT_IN (none, ``http``, ``http/dup``) as the next middleware
    made reads it; ask for it before the app. OpenTelemetry reads the variable once per
    process, when the first instrumentation is made (not at import), and keeps what it read
    in a class: that record is set aside for the test, and put back after it."""
    if request.param:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", request.param)
    stability = _OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    return str(request.param)


def _recorded(spans: list[ReadableSpan]) -> str:
    """Everything the spans would export that a request could have put there: names,
    attributes, events, statuses."""
    return json.dumps(
        [
            [
                span.name,
                {key: str(value) for key, value in (span.attributes or {}).items()},
                [[event.name, str(event.attributes)] for event in span.events],
                span.status.description,
            ]
            for span in spans
        ]
    )


def _servers(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.SERVER]


def _statements(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.CLIENT]


async def test_a_traceparent_is_continued_and_its_trace_id_logged(
    api: Api, spans: Callable[[], list[ReadableSpan]], lines: Lines
) -> None:
    """The request's span is a child of the caller's; the access line names both."""
    assert tracing_enabled()
    answer = await api.http.get("/.well-known/jwks.json", headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 200
    [server] = _servers(spans())
    assert server.context is not None and server.parent is not None
    assert _hex(server.context.trace_id, 32) == TRACE_ID
    assert _hex(server.parent.span_id, 16) == PARENT_ID
    assert server.parent.is_remote
    assert server.name == "GET /.well-known/jwks.json"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/.well-known/jwks.json"
    line = _access(lines, "/.well-known/jwks.json")
    assert line["request_id"] == answer.headers["x-request-id"]
    assert line["trace_id"] == TRACE_ID
    assert line["span_id"] == _hex(server.context.span_id, 16)
    assert line["span_id"] in {_hex(span.context.span_id, 16) for span in spans() if span.context}


async def test_without_a_traceparent_a_new_trace_is_logged(
    api: Api, spans: Callable[[], list[ReadableSpan]], lines: Lines
) -> None:
    answer = await api.http.get("/healthz")
    assert answer.status_code == 200
    [server] = _servers(spans())
    assert server.parent is None and server.context is not None
    line = _access(lines, "/healthz")
    assert line["trace_id"] == _hex(server.context.trace_id, 32) != TRACE_ID
    assert line["span_id"] == _hex(server.context.span_id, 16)


async def test_statements_are_children_of_the_request_and_hold_no_secret(
    api: Api, spans: Callable[[], list[ReadableSpan]], lines: Lines
) -> None:
    """A sign-up and a sign-in: a span per SQL statement in the request's trace, and no span
    holds the password, the email address, a token or a query string."""
    assert (await api.register(EMAIL)).status_code == 201
    login = await api.login(EMAIL, headers={"traceparent": TRACEPARENT})
    assert login.status_code == 200
    access, refresh = login.json()["access_token"], login.cookies[COOKIE]
    [server] = [span for span in _servers(spans()) if span.name == "POST /auth/login"]
    assert server.context is not None
    statements = [
        span
        for span in _statements(spans())
        if span.context is not None and span.context.trace_id == server.context.trace_id
    ]
    assert statements, "no span for the login's SQL"
    for span in statements:
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.attributes is not None and "db.statement" in span.attributes
    assert any("INSERT" in str(span.attributes["db.statement"]) for span in statements)
    [succeeded] = [line for line in lines() if line.get("type") == "login.succeeded"]
    assert succeeded["trace_id"] == TRACE_ID  # a security event names its trace too
    assert succeeded["span_id"] == _hex(server.context.span_id, 16)

    # Query strings: a mailed link's token, an email address in an admin search.
    for path in (
        f"/healthz?token={LINK_TOKEN}",
        f"/admin/users?email_prefix={EMAIL}&token={LINK_TOKEN}",
    ):
        await api.http.get(path, headers={"Authorization": f"Bearer {access}"})
    everything = spans()
    assert len(_servers(everything)) == 4
    attributes = [dict(span.attributes or {}) for span in everything]
    recorded = json.dumps([*attributes, *(span.name for span in everything)])
    for secret in (PASSWORD, EMAIL, access, refresh, LINK_TOKEN, "email_prefix"):
        assert secret not in recorded
    for found in attributes:
        for key, value in found.items():
            if "url" in key or "target" in key or "path" in key:
                assert "?" not in str(value), (key, value)
        assert "url.query" not in found


async def test_statements_outside_a_trace_make_no_span(
    service: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    """The server's own rounds (the outbox looks every second, pruning) start no trace; the
    same statement inside one is its child."""
    await service.db.ping()
    assert spans() == []
    with trace.get_tracer("test").start_as_current_span("round") as parent:
        await service.db.ping()
    statements = _statements(spans())
    assert statements and {span.parent.span_id for span in statements if span.parent} == {
        parent.get_span_context().span_id
    }
    assert "SELECT 1" in {span.attributes["db.statement"] for span in statements if span.attributes}


async def test_an_error_is_recorded_by_its_type_never_its_message(
    app: Any, api: Api, service: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    """A message may quote data (PostgreSQL's unique violation quotes the duplicate value;
    SQLAlchemy's errors quote the bound parameters): a span keeps the exception's type only.
    The app's exception still reaches the server as it was raised."""

    async def failing() -> None:
        raise RuntimeError(f"quoting {EMAIL}")

    app.add_api_route("/test-failure", failing)
    with pytest.raises(RuntimeError, match="quoting"):
        await api.http.get("/test-failure")
    round_ = trace.get_tracer("test").start_as_current_span("round")
    with round_, pytest.raises(Exception):  # noqa: B017 - whichever the driver raises
        async with service.db.read() as db:
            await db.execute(text("SELECT * FROM missing_table_7f3a"))
    [server] = _servers(spans())
    [statement] = [span for span in _statements(spans()) if span.status.is_ok is False]
    assert server.name == "GET /test-failure"
    for span in (server, statement):
        assert span.status.status_code is StatusCode.ERROR
        assert "7f3a" not in (span.status.description or "")
        for event in span.events:
            assert set(event.attributes or {}) <= {"exception.type", "exception.escaped"}
    assert EMAIL not in json.dumps([str(event.attributes) for event in server.events])
    [event] = server.events
    assert event.attributes == {
        "exception.type": "builtins.RuntimeError",
        "exception.escaped": True,
    }


async def test_a_request_span_holds_no_request_data(
    semconv: str,
    settings: Settings,
    spans: Callable[[], list[ReadableSpan]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the request holds and whatever OpenTelemetry is asked to capture: its
    method, the route label and the answer's status, never the path, the query string, a
    header (the Host and User-Agent ones, a credential, a response's Set-Cookie or Location),
    the client's address or a method no route knows. Every attribute key, in the old HTTP
    conventions, the new ones and both."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*")
    assert configure_tracing(settings)
    refresh, csrf, code = "twr_" + "R" * 43, "c" * 32, "authcode7f3a"

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"set-cookie", f"{COOKIE}={refresh}; HttpOnly".encode()),
            (b"location", f"https://app.example/cb?code={code}".encode()),
        ]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    transport = httpx.ASGITransport(app=trace_requests(answer), client=(PEER, 50000))
    base_url = "http://auth.example:8000"
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        for method in ("GET", "SECRET-7F3A"):
            await client.request(
                method,
                f"/nowhere/{EMAIL}?token={LINK_TOKEN}",
                headers={
                    "Authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
                    "Cookie": f"{COOKIE}={refresh}",
                    "X-CSRF-Token": csrf,
                    "X-Forwarded-For": "198.51.100.23",
                    "User-Agent": USER_AGENT,
                    "Host": "ada.example.com",
                    "traceparent": TRACEPARENT,
                },
            )
    found = spans()
    assert [span.name for span in found] == ["GET", "HTTP"]
    for span in found:
        attributes = dict(span.attributes or {})
        assert set(attributes) == SERVER_ATTRIBUTES[semconv], sorted(attributes)
        for key in ROUTE_ATTRIBUTES:
            assert attributes.get(key, UNMATCHED) == UNMATCHED, key
        assert attributes.get("http.status_code", 302) == 302
        assert attributes.get("http.response.status_code", 302) == 302
        assert span.parent is not None and _hex(span.parent.span_id, 16) == PARENT_ID
    methods = {
        str(span.attributes.get(key))
        for span in found
        if span.attributes
        for key in ("http.method", "http.request.method")
        if key in span.attributes
    }
    assert methods == {"GET", "_OTHER"}
    recorded = _recorded(found)
    for secret in (
        EMAIL,
        "nowhere",
        LINK_TOKEN,
        "token=",
        PEER,
        "198.51.100.23",
        USER_AGENT,
        "secret-agent",
        "7F3A",
        "ada.example.com",
        "eyJhbGciOiJFUzI1NiJ9",
        refresh,
        csrf,
        code,
        "app.example",
    ):
        assert secret not in recorded, secret


async def test_a_routed_request_and_a_404_hold_no_request_data(
    semconv: str, api: Api, spans: Callable[[], list[ReadableSpan]]
) -> None:
    """Through the whole app: a sign-up, a sign-in and a 404 whose path holds an email
    address, from the api fixture's peer with a User-Agent of its own. No span (the statements'
    included) holds the address, the password, the IP, the User-Agent, the path or the query
    string; the 404's route is the unmatched label, a routed request's its template.

    (The User-Agent holds no email address here: the access line writes the User-Agent as it
    came, and the suite fails a test that logs an address. The span test above sends one.)"""
    agent = {"User-Agent": "secret-agent/1.0 (agent-of-ada)"}
    assert (await api.register(EMAIL)).status_code == 201
    assert (await api.login(EMAIL, headers=agent)).status_code == 200
    missing = await api.http.get(f"/nowhere/{EMAIL}?token=twp_xxx", headers=agent)
    assert missing.status_code == 404
    everything = spans()
    servers = {span.name: dict(span.attributes or {}) for span in _servers(everything)}
    assert set(servers) == {"POST /auth/register", "POST /auth/login", "GET"}
    for name, attributes in servers.items():
        # The api fixture's server has no port: server.port and net.host.port are not set.
        expected = SERVER_ATTRIBUTES[semconv] - {"server.port", "net.host.port"}
        assert set(attributes) == expected, (name, sorted(attributes))
        label = name.partition(" ")[2] or UNMATCHED
        for key in ROUTE_ATTRIBUTES:
            assert attributes.get(key, label) == label, (name, key)
    assert servers["GET"]["http.route"] == UNMATCHED
    assert servers["POST /auth/login"]["http.route"] == "/auth/login"
    recorded = _recorded(everything)
    for secret in (EMAIL, PASSWORD, PEER, "agent-of-ada", "nowhere", "twp_xxx", "token="):
        assert secret not in recorded, secret


async def test_the_fast_paths_spans_are_named_after_their_routes(
    api: Api, spans: Callable[[], list[ReadableSpan]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /auth/me and POST /auth/refresh, answered by the fast path (no router ran): their
    spans get the template the fast path gives the access line."""
    answered: list[str] = []
    answer, refresh = FastProtectedRoute._answer, FastProtectedRoute._refresh

    async def answering(self: FastProtectedRoute, *args: Any) -> bool:
        done = await answer(self, *args)
        if done:
            answered.append("me")
        return done

    async def refreshing(self: FastProtectedRoute, *args: Any) -> bool:
        done = await refresh(self, *args)
        if done:
            answered.append("refresh")
        return done

    monkeypatch.setattr(FastProtectedRoute, "_answer", answering)
    monkeypatch.setattr(FastProtectedRoute, "_refresh", refreshing)
    assert (await api.register(EMAIL)).status_code == 201
    login = await api.login(EMAIL)
    assert (await api.me(login.json()["access_token"])).status_code == 200
    assert (await api.refresh(refresh_cookie(login))).status_code == 200
    assert answered == ["me", "refresh"]
    servers = {span.name: span for span in _servers(spans())}
    for name, route in (("GET /auth/me", "/auth/me"), ("POST /auth/refresh", "/auth/refresh")):
        attributes = dict(servers[name].attributes or {})
        assert attributes["http.route"] == attributes["http.target"] == route
        assert attributes["http.status_code"] == 200
        assert servers[name].end_time is not None


async def test_excluded_urls_make_no_span(
    settings: Settings, spans: Callable[[], list[ReadableSpan]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_PYTHON_EXCLUDED_URLS is matched against the request's own URL (the middleware is
    shown a placeholder path)."""
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz")
    assert configure_tracing(settings)

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    transport = httpx.ASGITransport(app=trace_requests(answer))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
    [server] = spans()
    assert server.attributes is not None and server.attributes["http.route"] == UNMATCHED


async def test_a_span_is_named_after_its_route_template(
    api: Api, spans: Callable[[], list[ReadableSpan]]
) -> None:
    """The template, never the path; a path no route has: the method alone, and the
    unmatched label for its route."""
    await api.http.get("/no/such/place-7f3a")
    await api.http.delete("/auth/sessions/0b7c5e7e-6d1b-4c1f-9d3e-2a1f6f1b9a00")
    routes = {span.name: (span.attributes or {}).get("http.route") for span in _servers(spans())}
    assert routes == {
        "GET": UNMATCHED,
        "DELETE /auth/sessions/{session_id}": "/auth/sessions/{session_id}",
    }


def test_a_line_logged_inside_a_span_names_it(
    settings: Settings, spans: Callable[[], list[ReadableSpan]]
) -> None:
    """Any record, not only tokenward's own lines: uvicorn's, a library's, in JSON or text."""
    assert configure_tracing(settings)
    logger = logging.getLogger("tokenward.test-trace")
    for log_format in ("json", "text"):
        output = io.StringIO()
        handler = logging.StreamHandler(output)
        handler.setFormatter(LineFormatter(log_format))
        logger.addHandler(handler)
        try:
            logger.warning("outside")
            with trace.get_tracer("test").start_as_current_span("work") as span:
                logger.warning("inside")
        finally:
            logger.removeHandler(handler)
        outside, inside = output.getvalue().splitlines()
        trace_id, span_id = (
            _hex(span.get_span_context().trace_id, 32),
            _hex(span.get_span_context().span_id, 16),
        )
        assert "trace_id" not in outside
        if log_format == "json":
            assert (json.loads(inside)["trace_id"], json.loads(inside)["span_id"]) == (
                trace_id,
                span_id,
            )
        else:
            assert f"trace_id={trace_id}" in inside and f"span_id={span_id}" in inside
    assert current_trace_ids() is None  # no span current


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_off_by_default_no_span_and_no_trace_id(
    api: Api, spans: Callable[[], list[ReadableSpan]], lines: Lines
) -> None:
    """TOKENWARD_OTEL off: nothing traced, and the lines carry no trace ids."""
    assert (await api.register(EMAIL)).status_code == 201
    assert (await api.http.get("/healthz", headers={"traceparent": TRACEPARENT})).status_code == 200
    assert not tracing_enabled()
    assert current_trace_ids() is None
    assert spans() == []
    assert lines()
    assert not [line for line in lines() if "trace_id" in line or "span_id" in line]


def test_without_the_extra_the_setting_is_refused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line that says what to install; off, the extra is not needed at all."""
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.asgi", None)
    for check in (lambda: configure_tracing(settings), check_tracing):
        with pytest.raises(ConfigError, match=r"pip install 'tokenward\[otel\]'"):
            check()
    assert not configure_tracing(make_settings(settings.data_dir))
    assert not tracing_enabled()


@pytest.mark.parametrize(
    ("variables", "service", "processors"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, "tokenward", 1),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_SERVICE_NAME": "auth-eu"}, "auth-eu", 0),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp,console",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=auth,deployment.environment=prod",
            },
            "auth",
            2,
        ),
    ],
)
def test_the_provider_follows_the_otel_variables(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], service: str, processors: int
) -> None:
    """Without a provider set by the embedding app: the service name (tokenward unless named)
    and the exporters of OTEL_TRACES_EXPORTER."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    provider = tracing._provider_from_environment()
    try:
        assert provider.resource.attributes["service.name"] == service
        assert len(provider._active_span_processor._span_processors) == processors
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "jaeger", "OTEL_TRACES_EXPORTER: jaeger"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_an_exporter_tokenward_does_not_ship_is_refused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    """Refused before any worker starts (check_tracing), unless the provider is an embedding
    app's: its exporters are its business."""
    monkeypatch.setenv(name, value)
    for check in (check_tracing, tracing._provider_from_environment):
        with pytest.raises(ConfigError, match=message):
            check()
    before = trace.get_tracer_provider()
    assert configure_tracing(settings)  # the module's provider is kept, as an app's would be
    assert trace.get_tracer_provider() is before and tracing_enabled()
