"""Log lines: one JSON object per line (or escaped text), each carrying its request's id.

Every record goes through one ``logging`` handler whose formatter is structlog's
``ProcessorFormatter``: tokenward's own lines (the access line, security events), its plain
``logging`` calls and uvicorn's are rendered by the same chain, so no line escapes the format
or the escaping. Nothing here calls ``structlog.configure``: an app that embeds tokenward keeps
its own structlog and logging setup, and tokenward's lines reach its handlers as ordinary
records.

With ``TOKENWARD_OTEL`` on (tokenward.infra.tracing), a line written while a span is current
also names its ``trace_id`` and ``span_id``; off, that costs one check of a global per line.

What a line may hold is the caller's business, and a narrow one: opaque ids, route templates,
enum values, counts. Never a token, password, hash or email address (the test suite checks
every line it captures, tests/support/logcheck.py).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from tokenward.core.events import NewEvent
from tokenward.infra.tracing import current_trace_ids

__all__ = [
    "PERSONAL_DETAIL",
    "LineFormatter",
    "LogFormat",
    "RequestLog",
    "access_log_enabled",
    "current_request",
    "enter_request",
    "leave_request",
    "log_event",
    "log_request",
    "logging_config",
    "new_request_id",
    "note_identity",
]

LogFormat = Literal["json", "text"]

PERSONAL_DETAIL = frozenset({"first_use", "reuse"})
"""``detail`` members kept in the database but not logged: the IP addresses and User-Agents of
other requests (``session.reuse_detected``). The line's own request has its IP already."""

_current: ContextVar[RequestLog | None] = ContextVar("tokenward_request", default=None)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


@dataclass(slots=True)
class RequestLog:
    """What the access line of one request says, filled in as the request goes.

    Mutable and shared by reference: the middleware that writes the line and the code deep in
    the request (a dependency, a fast path) hold the same object, whatever task copies the
    context in between.
    """

    request_id: str
    route: str | None = None
    user_id: str | None = None
    session_id: str | None = None


def new_request_id() -> str:
    """128 random bits as 32 hex digits. An id, not a secret: from ``random`` (reseeded in a
    forked child), a fifth of the cost of the operating system's random bytes."""
    return f"{random.getrandbits(128):032x}"


def current_request() -> RequestLog | None:
    """The request being served in this context, if any."""
    return _current.get()


def enter_request(record: RequestLog) -> Token[RequestLog | None]:
    """Make ``record`` the current request, until :func:`leave_request` with the token."""
    return _current.set(record)


def leave_request(token: Token[RequestLog | None]) -> None:
    _current.reset(token)


def note_identity(user_id: str, session_id: str | None) -> None:
    """Name the user and session behind the current request (opaque ids) for its access line."""
    record = _current.get()
    if record is not None:
        record.user_id = user_id
        record.session_id = session_id


def _add_request_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    record = _current.get()
    if record is not None:
        event.setdefault("request_id", record.request_id)
    return event


def _add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """With TOKENWARD_OTEL on, the trace and span the line was written in (infra/tracing)."""
    if (ids := current_trace_ids()) is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _escape_controls(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Text mode: CR, LF and other control characters as escapes, so that no value (a
    User-Agent, a message quoting input) can start a line of its own. A traceback is a
    ``traceback=`` value of the same line (ConsoleRenderer would start lines for an
    ``exception``)."""
    for key, value in event.items():
        if isinstance(value, str) and _CONTROL.search(value):
            event[key] = _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode(), value)
    if "exception" in event:
        event["traceback"] = event.pop("exception")
    return event


def _exception_without_messages(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """An exception as its types and frames, never its messages: a message may quote data (a
    failed statement's parameters, an address a validator refused, a token)."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    error = exc_info if isinstance(exc_info, BaseException) else (exc_info or (None, None))[1]
    if error is not None:
        event["exception"] = _described(error)
    return event


def _described(error: BaseException) -> str:
    """A traceback as Python prints one, chained exceptions first, each message withheld."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    parts = [
        "Traceback (most recent call last):\n"
        + "".join(traceback.format_tb(link.__traceback__))
        + f"{type(link).__module__}.{type(link).__qualname__} (message withheld)"
        for link in reversed(chain)
    ]
    return "\n\nDuring the handling of the above, or because of it:\n\n".join(parts)


_FIRST = ("time", "level", "event")


def _time_level_event_first(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The members a reader scans for first, first."""
    ordered: EventDict = {key: event[key] for key in _FIRST if key in event}
    ordered.update(event)
    return ordered


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")
"""The last whole second stamped and its text, replaced whole (threads may log at once)."""


def _stamp(created: float) -> str:
    """RFC 3339 in UTC, to the microsecond: ``2026-12-06T13:09:47.118467Z``. The text of the
    whole second is made once per second (strftime is a good part of a line's cost)."""
    global _last_second
    whole = int(created)
    second, text = _last_second
    if second != whole:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (whole, text)
    return f"{text}.{int((created - whole) * 1_000_000):06d}Z"


def _add_time(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """When the record was made (not when it is formatted)."""
    event["time"] = _stamp(event["_record"].created)
    return event


_JSON = json.JSONEncoder(default=str)
"""Escapes every control character: a value never leaves its string."""
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE = (
    # The C encoder JSONEncoder.encode makes anew on every call, made once (the same options:
    # ASCII, ", " and ": ", default=str, no circular check: a line is a tree of plain values).
    _C_ENCODER(
        None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    if _C_ENCODER is not None
    else None
)


def _dumps(value: Mapping[str, Any]) -> str:
    if _ENCODE is None:  # pragma: no cover - CPython always has the C encoder
        return _JSON.encode(value)
    return "".join(_ENCODE(value, 0))


def _json(_: WrappedLogger, __: str, event: EventDict) -> str:
    return _dumps(event)


_BARE = re.compile(r"[^\s='\"]+")
"""A text value written as it is; any other (a space, a quote, a control character) as its
Python repr, which escapes CR, LF and the rest."""


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return value if _BARE.fullmatch(value) and not _CONTROL.search(value) else repr(value)
    return repr(value) if isinstance(value, (dict, list, tuple)) else str(value)


def _text_line(time: str, level: str, line: dict[str, Any], logger: str) -> str:
    """One of tokenward's own lines in text mode, as ConsoleRenderer lays lines out (time,
    level, event, logger, then key=value in the line's order) at a tenth of its cost."""
    pairs = " ".join(f"{key}={_text_value(value)}" for key, value in line.items() if key != "event")
    return f"{time} [{level:<9}] {line.get('event')} [{logger}] {pairs}"


def _renderers(log_format: LogFormat) -> list[Processor]:
    if log_format == "json":
        return [_time_level_event_first, _json]
    console = structlog.dev.ConsoleRenderer(
        colors=False,
        pad_event_to=0,
        timestamp_key="time",
        # Never rich's tracebacks: they print local variables (a password, a token).
        exception_formatter=structlog.dev.plain_traceback,
    )
    return [_escape_controls, console]


class LineFormatter(ProcessorFormatter):
    """The one formatter of every log line: JSON objects or escaped text. structlog's, with a
    short way for tokenward's own structured lines.

    The access line is written on every request, the hot ones included: its event dict (a
    record of :class:`_Line`) goes straight to the renderer, without the copy of the
    record and the processor chain a plain ``logging`` call's message needs. Measured: about
    a third of the cost of the same line through a structlog logger, as cheap as the
    plainest ``logging`` call.
    """

    def __init__(self, log_format: LogFormat) -> None:
        self._render = _renderers(log_format)
        pre_chain: list[Processor] = [
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _add_time,
            _add_request_id,
            _add_trace_ids,
        ]
        super().__init__(
            processors=[
                ProcessorFormatter.remove_processors_meta,
                _exception_without_messages,
                *self._render,
            ],
            foreign_pre_chain=pre_chain,
        )

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "_tokenward", False):
            return super().format(record)
        level = record.levelname.lower()
        if self._render[-1] is not _json:
            line: dict[str, Any] = record.msg  # type: ignore[assignment]  # a _Line's dict
            return _text_line(_stamp(record.created), level, line, record.name)
        event: Any = {"time": _stamp(record.created), "level": level}
        event.update(record.msg, logger=record.name)
        return _dumps(event)  # already in order


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``tokenward serve``: every logger, uvicorn's too,
    through one handler on stderr. Given to uvicorn as its ``log_config``, so that each worker
    process applies it as it starts.

    ``debug`` is for tokenward's and uvicorn's loggers only: the libraries' debug lines carry
    SQL parameters (email addresses, password hashes), so the others stay at info."""
    root = "INFO" if level == "DEBUG" else level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "tokenward": {"()": "tokenward.infra.logs.LineFormatter", "log_format": log_format}
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "tokenward",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": root},
        "loggers": {
            # uvicorn's own handlers and propagation replaced by the one above.
            **{
                name: {"handlers": [], "propagate": True, "level": level}
                for name in ("tokenward", "uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # Alembic narrates every start ("Context impl SQLiteImpl."): its warnings only.
            "alembic": {"level": "WARNING"},
        },
    }


_access = logging.getLogger("tokenward.access")
_events = logging.getLogger("tokenward.events")


_STARTED = time.time()


class _Line(logging.LogRecord):
    """An info record of one of tokenward's structured lines (``msg`` is the line's dict).

    Made without ``LogRecord.__init__``'s work per call (the caller's file name parsed, the
    process name looked up), which cost as much as rendering the line: the source line of a
    log call that is always the same one says nothing. Every attribute a formatter may read
    is there; ``processName`` is None, as with ``logging.logMultiprocessing`` off."""

    def __init__(self, name: str, line: dict[str, Any]) -> None:
        created = time.time()
        self.name = name
        self.msg = line
        self.args = ()
        self.levelname = "INFO"
        self.levelno = logging.INFO
        self.pathname = self.filename = self.module = ""
        self.lineno = 0
        self.funcName = None  # type: ignore[assignment]  # as LogRecord sets it, untyped
        self.exc_info = None
        self.exc_text = None
        self.stack_info = None
        self.created = created
        self.msecs = (created - int(created)) * 1000
        self.relativeCreated = (created - _STARTED) * 1000
        self.thread = threading.get_ident()
        self.threadName = threading.current_thread().name
        self.processName = None
        self.process = os.getpid()
        self.taskName = None
        # What structlog's wrap_for_formatter gives: a structlog formatter of an embedding
        # app renders the line whole too.
        self._logger = None
        self._name = "info"
        self._tokenward = True


def _write(logger: logging.Logger, line: dict[str, Any]) -> None:
    """An info record of ``line`` to ``logger``'s handlers. With TOKENWARD_OTEL on, the line
    names the trace and span it was written in."""
    if (ids := current_trace_ids()) is not None:  # tracing off: one check of a global
        line["trace_id"], line["span_id"] = ids
    logger.handle(_Line(logger.name, line))


def access_log_enabled() -> bool:
    """Whether access lines are written at all (``TOKENWARD_LOG_LEVEL`` above info: not)."""
    return _access.isEnabledFor(logging.INFO)


def log_request(
    record: RequestLog,
    *,
    method: str,
    status: int,
    duration: float,
    client_ip: str | None,
) -> None:
    """The access line of one request (``duration`` in seconds)."""
    line = {
        "event": "request",
        "request_id": record.request_id,
        "method": method,
        "route": record.route,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
        "client_ip": client_ip,
        "user_id": record.user_id,
        "session_id": record.session_id,
    }
    _write(_access, line)


def log_event(event: NewEvent) -> None:
    """A security event, as stored (after its commit) less the personal parts of its detail."""
    if not _events.isEnabledFor(logging.INFO):
        return
    detail = event.detail
    if detail is not None and not PERSONAL_DETAIL.isdisjoint(detail):
        detail = {key: value for key, value in detail.items() if key not in PERSONAL_DETAIL}
    line = {
        "event": "security_event",
        "type": event.kind.value,
        "user_id": event.user_id,
        "session_id": event.session_id,
        "client_ip": event.client.ip,
        "detail": detail,
    }
    if (request := _current.get()) is not None:
        line["request_id"] = request.request_id
    _write(_events, line)
