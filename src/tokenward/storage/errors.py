"""Signals between the storage adapters and the units of work that call them."""

from __future__ import annotations

__all__ = ["FastPathDeclined", "RetryableConflict"]


class RetryableConflict(Exception):  # noqa: N818 - a signal to retry, not an error
    """The database rolled the transaction back and asked for it to be run again."""


class FastPathDeclined(Exception):  # noqa: N818 - a signal to take the other path, not an error
    """A fast adapter leaves this one to the full unit of work (a busy writer, an ending).

    Raised before anything was committed: the caller runs the same use case through
    ``Store.write()``, which waits its turn and writes what the fast adapter does not."""
