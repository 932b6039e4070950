"""What operators are told once a transaction commits: its security events logged and counted,
its ended sessions counted. Called by the storage adapters after the commit, never for a
transaction rolled back (and perhaps retried), so nothing is told twice or for nothing."""

from __future__ import annotations

from collections.abc import Sequence

from tokenward.core.events import NewEvent
from tokenward.core.sessions import EndReason
from tokenward.infra import metrics
from tokenward.infra.logs import log_event

__all__ = ["committed"]


def committed(events: Sequence[NewEvent], ended: Sequence[tuple[EndReason, int]] = ()) -> None:
    """Tell of a committed transaction's ``events`` and of the sessions it ``ended``."""
    for event in events:
        log_event(event)
    metrics.current().committed(events, ended)
