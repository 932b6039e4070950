"""Signals between the storage adapters and the units of work that call them."""

from __future__ import annotations

from tokenward.infra.metrics import DatabaseErrorKind

__all__ = ["STATEMENT_TIMEOUT", "FastPathDeclined", "RetryableConflict", "outage_kind"]

STATEMENT_TIMEOUT = "57014"
"""PostgreSQL's query_canceled: ``statement_timeout`` ran out."""


class RetryableConflict(Exception):  # noqa: N818 - a signal to retry, not an error
    """The database rolled the transaction back and asked for it to be run again."""


class FastPathDeclined(Exception):  # noqa: N818 - a signal to take the other path, not an error
    """A fast adapter leaves this one to the full unit of work (a busy writer, an ending).

    Raised before anything was committed: the caller runs the same use case through
    ``Store.write()``, which waits its turn and writes what the fast adapter does not."""


def outage_kind(*, timed_out: bool, sqlstate: str | None) -> DatabaseErrorKind:
    """How an error that makes the database unavailable is counted, by either adapter: a
    timeout (no connection in time, a statement cancelled by its timeout) or unavailable."""
    if timed_out or sqlstate == STATEMENT_TIMEOUT:
        return DatabaseErrorKind.TIMEOUT
    return DatabaseErrorKind.UNAVAILABLE
