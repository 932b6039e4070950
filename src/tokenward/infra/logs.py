"""Log lines: one JSON object per line (or escaped text), each carrying its request's id.

Every record goes through one ``logging`` handler whose formatter is structlog's
``ProcessorFormatter``: tokenward's own lines (the access line, security events), its plain
``logging`` calls and uvicorn's are rendered by the same chain, so no line escapes the format
or the escaping. Nothing here calls ``structlog.configure``: an app that embeds tokenward keeps
its own structlog and logging setup, and tokenward's lines reach its handlers as ordinary
records.

What a line may hold is the caller's business, and a narrow one: opaque ids, route templates,
enum values, counts. Never a token, password, hash or email address (the test suite checks
every line it captures, tests/support/logcheck.py).
"""

from __future__ import annotations

import logging
import logging.config
import re
import secrets
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from structlog.stdlib import BoundLogger, ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from tokenward.core.events import NewEvent

__all__ = [
    "PERSONAL_DETAIL",
    "LogFormat",
    "RequestLog",
    "access_log_enabled",
    "current_request",
    "enter_request",
    "formatter",
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
    """128 random bits as 32 hex digits."""
    return secrets.token_hex(16)


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


def _escape_controls(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Text mode: CR, LF and other control characters as escapes, so that no value (a
    User-Agent, a message quoting input) can start a line of its own."""
    for key, value in event.items():
        if isinstance(value, str) and _CONTROL.search(value):
            event[key] = _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode(), value)
    return event


_FIRST = ("time", "level", "event")


def _time_level_event_first(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The members a reader scans for first, first."""
    ordered: EventDict = {key: event[key] for key in _FIRST if key in event}
    ordered.update(event)
    return ordered


def _chain(log_format: LogFormat) -> list[Processor]:
    renderer: Processor
    if log_format == "json":
        # json.dumps escapes every control character: a value never leaves its string.
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        tail: list[Processor] = [
            structlog.processors.format_exc_info,
            _time_level_event_first,
            renderer,
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False,
            pad_event_to=0,
            timestamp_key="time",
            # Never rich's tracebacks: they print local variables (a password, a token).
            exception_formatter=structlog.dev.plain_traceback,
        )
        tail = [structlog.processors.format_exc_info, _escape_controls, renderer]
    return [ProcessorFormatter.remove_processors_meta, *tail]


def formatter(log_format: LogFormat) -> ProcessorFormatter:
    """The one formatter of every tokenward log line: JSON objects or escaped text."""
    pre_chain: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        _add_request_id,
    ]
    return ProcessorFormatter(
        processors=_chain(log_format), foreign_pre_chain=pre_chain, pass_foreign_args=False
    )


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``tokenward serve``: every logger, uvicorn's too,
    through one handler on stderr. Given to uvicorn as its ``log_config``, so that each worker
    process applies it as it starts."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "tokenward": {"()": "tokenward.infra.logs.formatter", "log_format": log_format}
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "tokenward",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own handlers and propagation replaced by the one above.
            name: {"handlers": [], "propagate": True, "level": level}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def _bound(name: str) -> BoundLogger:
    """A structlog logger over the ``logging`` logger ``name``, configured here and not
    globally: its event dicts reach the handler's formatter whole."""
    pre: list[Processor] = [
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_request_id,
        ProcessorFormatter.wrap_for_formatter,
    ]
    logger: BoundLogger = structlog.wrap_logger(
        logging.getLogger(name), processors=pre, wrapper_class=BoundLogger
    )
    return logger


_access = logging.getLogger("tokenward.access")
_access_log = _bound("tokenward.access")
_events = logging.getLogger("tokenward.events")
_events_log = _bound("tokenward.events")


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
    user_agent: str | None,
) -> None:
    """The access line of one request (``duration`` in seconds)."""
    _access_log.info(
        "request",
        request_id=record.request_id,
        method=method,
        route=record.route,
        status=status,
        duration_ms=round(duration * 1000, 3),
        client_ip=client_ip,
        user_agent=user_agent,
        user_id=record.user_id,
        session_id=record.session_id,
    )


def log_event(event: NewEvent) -> None:
    """A security event, as stored (after its commit) less the personal parts of its detail."""
    if not _events.isEnabledFor(logging.INFO):
        return
    detail = event.detail
    if detail is not None and not PERSONAL_DETAIL.isdisjoint(detail):
        detail = {key: value for key, value in detail.items() if key not in PERSONAL_DETAIL}
    _events_log.info(
        "security_event",
        type=event.kind.value,
        user_id=event.user_id,
        session_id=event.session_id,
        client_ip=event.client.ip,
        detail=detail,
    )
