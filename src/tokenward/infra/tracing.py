"""OpenTelemetry traces: a span per request and per SQL statement (the ``tokenward[otel]`` extra).

One switch, ``TOKENWARD_OTEL``; the rest is OpenTelemetry's own ``OTEL_*`` variables. Off
(the default), nothing here imports OpenTelemetry and :func:`current_trace_ids` is one check
of a module global, so a log line pays nothing for it. On, :func:`configure_tracing` sets up a
TracerProvider once per process from the environment (or keeps the one an embedding app or a
test set), the app's outermost layer is :func:`trace_requests`, and each engine
:class:`~tokenward.storage.db.Database` makes is traced by :func:`trace_database`.

A request's ``traceparent`` (W3C Trace Context) continues its trace; a statement outside any
trace (the server's own rounds) makes no span. A request's span holds its method, route
template (``unmatched`` when no route answered), status, scheme, HTTP version and the server's
own address and port. What a span never holds: the path (a 404's may hold an email address),
the query string (a mailed link's page may carry a token there), a header's value (the
trace-context headers are read, never recorded; OpenTelemetry's header capture is off), the
client's address or User-Agent, a statement's bound parameters (``db.statement`` is the SQL
text with its placeholders), an exception's message (its type only).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from tokenward.exceptions import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, Tracer
    from opentelemetry.util.types import AnyValue, Attributes
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from tokenward.infra.config import Settings
    from tokenward.infra.logs import RequestLog

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
_OTHER_METHOD = "_OTHER"
"""What the middleware is shown for any other method (OpenTelemetry's own word for one): the
method a client sent is not recorded (``http.request.method_original`` would hold it)."""
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})
"""The only headers the middleware is shown: those a trace is continued from (the default
``OTEL_PROPAGATORS``, W3C Trace Context and Baggage). No other header can become an attribute
(the Host header, the User-Agent, a captured one)."""
_PLACEHOLDER_PATH = "/"
"""The path the middleware is shown: it holds nothing of the request."""
_URL_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.full")
"""The attributes OpenTelemetry computes from the (placeholder) path, old and new HTTP
semantic conventions alike: once the request is answered they hold its route label."""


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The request span's first name: the method alone (the route is not known yet, and the
    raw path is not a name). :class:`_RequestTracing` renames it once the app has answered."""
    method = scope.get("method", "")
    return (method if method in _METHODS else "HTTP"), {}


def _keep_span(span: Span, scope: Scope) -> None:
    """The middleware's hook with the request's server span: kept for its naming and its end."""
    scope[_SPAN] = span


def _shown(scope: Scope) -> Scope:
    """The copy of ``scope`` OpenTelemetry's middleware gets, and computes its attributes from:
    nothing of the request but its method (one of :data:`_METHODS`), scheme, HTTP version
    and the trace-context headers. No client address, path or query string; the server's own
    address and port are the socket's (``scope["server"]``), not the Host header."""
    method = scope.get("method")
    return {
        **scope,
        "method": method if method in _METHODS else _OTHER_METHOD,
        "path": _PLACEHOLDER_PATH,
        "raw_path": _PLACEHOLDER_PATH.encode(),
        "query_string": b"",
        "client": None,
        "headers": [
            (name, value) for name, value in scope.get("headers", ()) if name.lower() in _PROPAGATED
        ],
        _ORIGINAL_SCOPE: scope,
    }


class _RequestTracing:
    """OpenTelemetry's ASGI middleware, shown a request that holds no request data.

    The middleware records its attributes from the scope it is given: it gets
    :func:`_shown`'s copy, while the app gets the request as it came. Its span is held open
    past the answer's last byte (where the middleware ends it; its end time is kept) until the
    app has returned: then it is named after its route template (``POST /auth/login``), its
    ``http.route`` and URL attributes (:data:`_URL_ATTRIBUTES`) are that template or
    ``unmatched`` (:data:`tokenward.infra.metrics.UNMATCHED`: a 404, a static file, a
    transport defence's refusal), and it ends. The template is the access line's
    (:class:`tokenward.infra.logs.RequestLog`): the router's, or the one a fast path names
    once it has answered (``GET /auth/me``, ``POST /auth/refresh``). An exception the app
    raises is recorded by its type alone, never its message, even when the 500 has gone.
    OpenTelemetry's header capture (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*``)
    is off: a request header's value may be personal (a User-Agent), a response header's a
    credential (a redirect's authorisation code).
    """

    def __init__(self, app: ASGIApp) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.util.http import get_excluded_urls

        from tokenward.infra.logs import current_request
        from tokenward.infra.metrics import UNMATCHED

        self.app = app
        self.current_request = current_request
        self.unmatched = UNMATCHED
        # Matched here, against the request's own URL (the middleware sees the placeholder).
        self.excluded = get_excluded_urls("ASGI")  # OTEL_PYTHON_[ASGI_]EXCLUDED_URLS
        self.traced = OpenTelemetryMiddleware(
            self._inner,
            default_span_details=_span_details,
            server_request_hook=_keep_span,
            exclude_spans=["receive", "send"],  # one span per request, not one per message
        )
        self.traced.http_capture_headers_server_request = None
        self.traced.http_capture_headers_server_response = None
        self.traced.tracer = _holding(self.traced.tracer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.excluded.url_disabled(_url(scope)):
            await self.app(scope, receive, send)
            return
        seen = _shown(scope)
        try:
            await self.traced(seen, receive, send)
        finally:
            if (span := seen.get(_SPAN)) is not None:
                span.finish()
        if (error := seen.get(_ERROR)) is not None:
            raise error  # as the server and a test client would have seen it

    async def _inner(self, seen: Scope, receive: Receive, send: Send) -> None:
        scope: Scope = seen.pop(_ORIGINAL_SCOPE)
        span: _HeldSpan | None = seen.get(_SPAN)
        if span is None:  # not traced (OpenTelemetry's instrumentation suppressed)
            await self.app(scope, receive, send)
            return
        record: RequestLog | None = None

        async def send_noting_the_request(message: Message) -> None:
            # The access line's record, current where the answer is sent (the layer that
            # makes it is inside this one); a fast path names its route only once it answered.
            nonlocal record
            if record is None:
                record = self.current_request()
            await send(message)

        try:
            await self.app(scope, receive, send_noting_the_request)
        except Exception as error:
            # Raised again outside the middleware, which would record its message and its
            # traceback (a database error's quotes its statement's bound values): its type only.
            seen[_ERROR] = error
            span.record_exception(error)
        finally:
            template = (record.route if record is not None else None) or getattr(
                scope.get("route"), "path_format", None
            )
            if template is not None:
                seen["route"] = _Route(template)  # the middleware's metrics: the template too
            if span.is_recording():
                label = template or self.unmatched
                span.set_attribute("http.route", label)
                for key in span.url_attributes:
                    span.set_attribute(key, label)
                if template is not None:
                    span.update_name(f"{_span_details(scope)[0]} {template}")


class _Route:
    """What the middleware reads of a matched route (``scope["route"]``) for its metrics."""

    __slots__ = ("path_format",)

    def __init__(self, path_format: str) -> None:
        self.path_format = path_format


class _HeldSpan(Protocol):
    """What :class:`_RequestTracing` needs of a span :func:`_holding` made."""

    url_attributes: tuple[str, ...]

    def is_recording(self) -> bool: ...

    def set_attribute(self, key: str, value: AnyValue) -> None: ...

    def update_name(self, name: str) -> None: ...

    def record_exception(self, exception: BaseException) -> None: ...

    def finish(self) -> None: ...


def _url(scope: Scope) -> str:
    """The request's URL without its query string, as OpenTelemetry matches excluded URLs."""
    from opentelemetry.instrumentation.asgi import get_host_port_url_tuple

    return str(get_host_port_url_tuple(scope)[2])  # type: ignore[no-untyped-call]


def _holding(tracer: Tracer) -> Tracer:
    """``tracer`` (the middleware's), whose server spans end at :meth:`finish` only: the
    middleware's ``end()`` (at the answer's last byte, or once the app returned) notes the end
    time, so that what is known only afterwards (a fast path's route, an exception the app
    raised after its 500 went) is still recorded, and the span still ends at the last byte.
    A recorded exception keeps its type only, a status no description."""
    from opentelemetry import trace

    class HeldSpan(_types_only_span()):  # type: ignore[misc]
        def __init__(self, span: Span, url_attributes: tuple[str, ...]) -> None:
            super().__init__(span)
            self.url_attributes = url_attributes
            self.end_time: int | None = None

        def end(self, end_time: int | None = None) -> None:
            if self.end_time is None:
                self.end_time = end_time if end_time is not None else time.time_ns()

        def finish(self) -> None:
            self.span.end(self.end_time)

    class Holding(trace.Tracer):
        def start_span(
            self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
        ) -> Span:
            attributes = kwargs.get("attributes") or {}
            held = tuple(key for key in _URL_ATTRIBUTES if key in attributes)
            return HeldSpan(tracer.start_span(name, context, *args, **kwargs), held)

        def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
            return tracer.start_as_current_span(*args, **kwargs)  # not a server span's

    return Holding()


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

    tracer = trace.get_tracer(_SQLALCHEMY, __version__)

    statement_span = _types_only_span()

    class InTraceOnly(trace.Tracer):
        def start_span(
            self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
        ) -> Span:
            if not trace.get_current_span(context).get_span_context().is_valid:
                return trace.INVALID_SPAN
            return statement_span(tracer.start_span(name, context, *args, **kwargs))  # type: ignore[no-any-return]

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


@functools.cache
def _types_only_span() -> type:
    """A span that passes everything on to the span it wraps but an error's message and a
    status's description (a database error's quotes its statement's bound values): the
    request's spans (:func:`_holding`) and the statements' (:func:`_in_trace_only`)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status

    class TypesOnly(trace.Span):
        def __init__(self, span: Span) -> None:
            self.span = span

        @property
        def kind(self) -> SpanKind:  # the SDK's span has it; the middleware reads it
            return getattr(self.span, "kind", SpanKind.INTERNAL)

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

    return TypesOnly


def _record_type(span: Span, error: BaseException) -> None:
    """``error`` as a span event and status, by its type alone (a message may quote data)."""
    from opentelemetry.trace import StatusCode

    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    span.add_event("exception", {"exception.type": kind, "exception.escaped": True})
    span.set_status(StatusCode.ERROR, type(error).__name__)
