"""The check over every log line the suite captures: no secret and no personal data.

A handler on the root logger renders each record as ``tokenward serve`` would (the JSON
formatter, so that structured lines are read whole, not just their message) and looks for
the shapes of what must never be logged. Precise shapes, not loose words: an email address,
a JWT (two base64url JSON objects), a tokenward token (``twr_``, ``twm_``, ... and at least
16 characters of base64url), an argon2 or bcrypt hash, the suite's own password. A client
secret has no prefix, so no shape to look for: only its absence from what is logged.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from support.app import PASSWORD
from tokenward.infra.logs import LineFormatter

__all__ = ["FORBIDDEN", "LeakCheck", "Lines", "captured_lines", "leaks"]

FORBIDDEN = {
    "email address": re.compile(
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*"
        r"\.[A-Za-z]{2,}"
    ),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    # Refresh (twr_), MFA (twm_) and the four mailed links' tokens (core.onetime); not twc_,
    # a client's public id.
    "tokenward token": re.compile(r"(?<![A-Za-z0-9])tw[rmvpex]_[A-Za-z0-9_-]{16,}"),
    "password hash": re.compile(r"\$argon2(?:id|i|d)\$|\$2[aby]\$\d\d\$"),
    "password": re.compile(re.escape(PASSWORD)),
}


def leaks(line: str) -> list[str]:
    """What ``line`` holds that no log line may: the names of the shapes found."""
    return [name for name, shape in FORBIDDEN.items() if shape.search(line)]


def _checked(record: logging.LogRecord) -> bool:
    """Whether ``tokenward serve`` could write ``record``. Not: a library's debug line (serve
    keeps libraries at info, infra.logs.logging_config; aiosqlite's carry SQL parameters) and
    the suite's own SMTP server (aiosmtpd's ``mail.log``)."""
    if record.name == "mail.log" or record.name.startswith("mail.log."):
        return False
    return record.levelno >= logging.INFO or record.name.startswith("tokenward")


class LeakCheck(logging.Handler):
    """Collects the lines that break the rule; the conftest fixture fails their test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(LineFormatter("json"))
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not _checked(record):
            return
        try:
            line = self.format(record)
        except Exception as error:  # a record that cannot be rendered is a finding too
            line = f"unrenderable record from {record.name}: {error!r}"
            self.found.append(line)
            return
        if found := leaks(line):
            self.found.append(f"{', '.join(found)} in: {line}")


Lines = Callable[[], list[dict[str, Any]]]


@contextmanager
def captured_lines() -> Iterator[Lines]:
    """Every line logged meanwhile, rendered as ``tokenward serve`` writes JSON and read back:
    one object per line, or reading fails."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(LineFormatter("json"))
    logging.getLogger().addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in output.getvalue().splitlines()]
    finally:
        logging.getLogger().removeHandler(handler)
