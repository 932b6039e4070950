"""OpenTelemetry traces: a span per request and per SQL statement (the ``tokenward[otel]`` extra).

One switch, ``TOKENWARD_OTEL``; the rest is OpenTelemetry's own ``OTEL_*`` variables. Off
(the default), nothing here imports OpenTelemetry and :func:`current_trace_ids` is one check
of a module global, so a log line pays nothing for it. On, :func:`configure_tracing` sets up a
TracerProvider once per process from the environment (or keeps the one an embedding app or a
test set), the app's outermost layer is :func:`trace_requests`, and each engine
:class:`~tokenward.storage.db.Database` makes is traced by :func:`trace_database`.

A request's ``traceparent`` (W3C Trace Context) continues its trace; a statement outside any
trace (the server's own rounds) makes no span. What a span never holds: the query string (a
mailed link's page may carry a token there), a header's value (unless the operator asks for
headers by OpenTelemetry's variables, and then the ones that carry credentials are redacted),
a statement's bound parameters (``db.statement`` is the SQL text with its placeholders), an
exception's message (its type only).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from tokenward.exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, SpanContext, Status, StatusCode, Tracer
    from opentelemetry.util.types import AnyValue, Attributes
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from tokenward.infra.config import Settings

__all__ = [
    "check_tracing",
    "configure_tracing",
    "current_trace_ids",
    "trace_database",
    "trace_requests",
    "tracing_enabled",
]

MISSING_EXTRA = "TOKENWARD_OTEL=on needs the tokenward[otel] extra: pip install 'tokenward[otel]'"
SERVICE_NAME = "tokenward"
"""The ``service.name`` of the spans unless ``OTEL_SERVICE_NAME`` or
``OTEL_RESOURCE_ATTRIBUTES`` name another."""
EXPORTERS = frozenset({"otlp", "console", "none"})
"""What ``OTEL_TRACES_EXPORTER`` may name (a comma-separated list of them)."""
REDACTED_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    ".*token.*",
    ".*secret.*",
    ".*csrf.*",
    ".*key.*",
)
"""Patterns of header names whose values a span never holds, whatever headers the operator
has OpenTelemetry capture (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*``)."""
_ORIGINAL_SCOPE = "tokenward.scope"
_SPAN = "tokenward.span"
_ERROR = "tokenward.error"
_SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy"

_current_span: Callable[[], Span] | None = None
"""OpenTelemetry's ``get_current_span`` once tracing is on in this process; None while off."""
_statement_tracer: Tracer | None = None
"""The tracer of every traced engine's statements (:func:`_in_trace_only`), made once."""
_connections_usage: Any = None
"""The SQLAlchemy instrumentation's connection counter, shared by every traced engine."""


class _AsyncEngine(Protocol):
    """What :func:`trace_database` needs of SQLAlchemy's AsyncEngine (infra talks no SQL)."""

    @property
    def sync_engine(self) -> Any: ...


def tracing_enabled() -> bool:
    """Whether :func:`configure_tracing` turned tracing on in this process."""
    return _current_span is not None


def check_tracing() -> None:
    """Raise :class:`ConfigError` (one line) unless the ``otel`` extra is installed and
    ``OTEL_TRACES_EXPORTER`` names exporters it ships: what :func:`configure_tracing` checks,
    for a command that starts workers to fail before they do."""
    _require_extra()
    _exporters()


def _require_extra() -> None:
    try:
        from opentelemetry import trace  # noqa: F401
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: F401
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer  # noqa: F401
        from opentelemetry.sdk.trace import TracerProvider  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_EXTRA) from None


def configure_tracing(settings: Settings) -> bool:
    """Turn tracing on when ``TOKENWARD_OTEL`` says so; whether it is on.

    The first call of the process sets OpenTelemetry's global TracerProvider from the
    standard variables, unless one is set already (an embedding app's, a test's): that one is
    used as it is (and ``OTEL_TRACES_EXPORTER`` is its business). Raises :class:`ConfigError`
    when the extra is not installed, or when the provider is tokenward's and
    ``OTEL_TRACES_EXPORTER`` names an exporter tokenward does not ship.
    """
    global _current_span
    if not settings.otel:
        return False
    if _current_span is not None:
        return True
    _require_extra()
    from opentelemetry import trace

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(_provider_from_environment())
    _current_span = trace.get_current_span
    return True


def _exporters() -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names, once checked (OTLP over HTTP only)."""
    value = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    names = [name.strip().lower() for name in value.split(",") if name.strip()] or ["otlp"]
    unknown = sorted(set(names) - EXPORTERS)
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not one of otlp, console, none"
        )
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    )
    if "otlp" in names and protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: tokenward[otel] sends http/protobuf, not {protocol}"
        )
    return names


def _provider_from_environment() -> TracerProvider:
    """A TracerProvider as OpenTelemetry's variables describe it: resource, sampler and limits
    (the SDK reads those itself), and the exporters of ``OTEL_TRACES_EXPORTER``: ``otlp``
    (OTLP over HTTP, batched; the default), ``console`` (standard output) or ``none``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    names = _exporters()
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    if "otlp" in names:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(MISSING_EXTRA) from None
        # Endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_[TRACES_]*.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in names:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def current_trace_ids() -> tuple[str, str] | None:
    """The trace id and span id of the current span (32 and 16 lowercase hex digits), or None
    when tracing is off or no span is current."""
    if _current_span is None:
        return None
    context = _current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The request span's first name: the method alone (the route is not known yet, and the
    raw path is not a name). :class:`_RequestTracing` renames it once the router has run."""
    method = scope.get("method", "")
    return (method if method in _METHODS else "HTTP"), {}


def _keep_span(span: Span, scope: Scope) -> None:
    """The middleware's hook with the request's server span: kept for its renaming."""
    scope[_SPAN] = span


class _RequestTracing:
    """OpenTelemetry's ASGI middleware, shown the request without its query string.

    The middleware records the URL (``http.url``, ``url.query``...) from the scope it is
    given: it gets a copy whose query string is empty, while the app gets the request as it
    came. When the answer starts, a routed request's span is named after its route template
    (``POST /auth/login``) and gets ``http.route``; a request the router did not route (a
    404, the fast paths of ``/auth/me`` and ``/auth/refresh``) keeps the method alone. An
    exception the app raises is recorded by its type alone, never its message.
    """

    def __init__(self, app: ASGIApp) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.util.http import get_custom_headers, get_excluded_urls

        self.app = app
        sanitised = get_custom_headers("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS")
        self.traced = OpenTelemetryMiddleware(
            self._inner,
            excluded_urls=get_excluded_urls("ASGI"),  # OTEL_PYTHON_[ASGI_]EXCLUDED_URLS
            default_span_details=_span_details,
            http_capture_headers_sanitize_fields=[*REDACTED_HEADERS, *sanitised],
            server_request_hook=_keep_span,
            exclude_spans=["receive", "send"],  # one span per request, not one per message
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = {**scope, "query_string": b"", _ORIGINAL_SCOPE: scope}
        await self.traced(seen, receive, send)
        if (error := seen.get(_ERROR)) is not None:
            raise error  # as the server and a test client would have seen it

    async def _inner(self, seen: Scope, receive: Receive, send: Send) -> None:
        scope: Scope = seen.pop(_ORIGINAL_SCOPE)
        span: Span | None = seen.get(_SPAN)
        if span is None:  # not traced (OTEL_PYTHON_EXCLUDED_URLS)
            await self.app(scope, receive, send)
            return

        def name_the_span() -> None:
            template = getattr(scope.get("route"), "path_format", None)
            if template is not None and span.is_recording():
                seen["route"] = scope["route"]  # the middleware's metrics: the template too
                span.update_name(f"{_span_details(scope)[0]} {template}")
                span.set_attribute("http.route", template)

        async def send_naming_the_span(message: Message) -> None:
            # When the answer starts: the router has run (if it ran at all), and the
            # middleware ends the span with the answer's last byte.
            if message["type"] == "http.response.start":
                name_the_span()
            await send(message)

        try:
            await self.app(scope, receive, send_naming_the_span)
        except Exception as error:
            # Raised again outside the middleware, which would record its message and its
            # traceback (a database error's quotes its statement's bound values): its type only.
            seen[_ERROR] = error
            _record_type(span, error)
        finally:
            name_the_span()  # an app that raised before it answered


def trace_requests(app: ASGIApp) -> ASGIApp:
    """``app`` in a server span per HTTP request, continuing the request's ``traceparent``.

    Meant as the outermost layer (``app.add_middleware(trace_requests)`` last), so that the
    span is current while the access line is written. Call :func:`configure_tracing` first.
    """
    return _RequestTracing(app)


def trace_database(engine: _AsyncEngine) -> None:
    """A client span per SQL statement ``engine`` (SQLAlchemy's AsyncEngine) runs inside a
    trace, a child of the request's span. ``db.statement`` is the statement with its
    placeholders, never the bound values; no SQL comment is added to the statements.

    OpenTelemetry's ``SQLAlchemyInstrumentor().instrument(engine=...)`` works once per process
    (an instrumentor is a singleton) and patches every engine made afterwards; this is what it
    does for its one engine, for each engine tokenward makes."""
    global _connections_usage, _statement_tracer
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    if _statement_tracer is None:
        _statement_tracer = _in_trace_only()
        _connections_usage = get_meter(_SQLALCHEMY).create_up_down_counter(
            name="db.client.connections.usage",
            unit="connections",
            description="The number of connections that are currently in state described "
            "by the state attribute.",
        )
    EngineTracer(  # type: ignore[no-untyped-call]
        _statement_tracer, engine.sync_engine, _connections_usage, enable_commenter=False
    )


def _in_trace_only() -> Tracer:
    """The statements' tracer: a span for a statement run inside a trace (a request's), none
    for the server's own rounds outside any (the outbox looked at every second, pruning),
    which would otherwise each start a trace of their own. A failed statement's span says
    that it failed, never the driver's message: PostgreSQL's for a unique violation quotes the
    duplicate value (``Key (email)=(...) already exists``)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.trace import Status

    tracer = trace.get_tracer(_SQLALCHEMY, __version__)

    class StatementSpan(trace.Span):
        def __init__(self, span: Span) -> None:
            self.span = span

        def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
            self.span.set_status(status.status_code if isinstance(status, Status) else status)

        def record_exception(
            self,
            exception: BaseException,
            attributes: Attributes = None,
            timestamp: int | None = None,
            escaped: bool = False,
        ) -> None:
            _record_type(self.span, exception)

        def end(self, end_time: int | None = None) -> None:
            self.span.end(end_time)

        def get_span_context(self) -> SpanContext:
            return self.span.get_span_context()

        def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
            self.span.set_attributes(attributes)

        def set_attribute(self, key: str, value: AnyValue) -> None:
            self.span.set_attribute(key, value)

        def add_event(
            self, name: str, attributes: Attributes = None, timestamp: int | None = None
        ) -> None:
            self.span.add_event(name, attributes, timestamp)

        def update_name(self, name: str) -> None:
            self.span.update_name(name)

        def is_recording(self) -> bool:
            return self.span.is_recording()

    class InTraceOnly(trace.Tracer):
        def start_span(
            self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
        ) -> Span:
            if not trace.get_current_span(context).get_span_context().is_valid:
                return trace.INVALID_SPAN
            return StatementSpan(tracer.start_span(name, context, *args, **kwargs))

        # contextlib's decorator: OpenTelemetry's own (an async-agnostic one) is private.
        @contextmanager
        def start_as_current_span(  # type: ignore[override]
            self,
            name: str,
            context: Context | None = None,
            *args: Any,
            end_on_exit: bool = True,
            **kwargs: Any,
        ) -> Iterator[Span]:
            span = self.start_span(name, context, *args, **kwargs)
            with trace.use_span(span, end_on_exit=end_on_exit):
                yield span

    return InTraceOnly()


def _record_type(span: Span, error: BaseException) -> None:
    """``error`` as a span event and status, by its type alone (a message may quote data)."""
    from opentelemetry.trace import StatusCode

    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    span.add_event("exception", {"exception.type": kind, "exception.escaped": True})
    span.set_status(StatusCode.ERROR, type(error).__name__)
