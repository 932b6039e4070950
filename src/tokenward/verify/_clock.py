"""The two clocks a verifier reads: wall time for claims, monotonic time for intervals."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


class Clock(Protocol):
    """Where a verifier gets the time; tests pass one they move by hand."""

    def time(self) -> float:
        """Epoch seconds, compared with exp, iat, nbf and revoked_at."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back, for cache lifetimes and poll intervals."""
        ...


class SystemClock:
    """The process's own clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
