"""Helpers the tests share, in one place (conftest.py holds only hooks and fixtures).

Test modules import from here, never from conftest or from one another.
"""

from support.app import (
    COOKIE,
    FAST_HASHER,
    LIFESPAN_TIMEOUT,
    PASSWORD,
    SHARED_SECRET,
    Api,
    FakeClock,
    make_settings,
    refresh_cookie,
)
from support.checks import PROBLEM, counts, headers_without_request_id, without_request_id
from support.cli import acli, cli, ok
from support.databases import drop_database, flush_redis, new_database
from support.servers import TOKENWARD, Server, free_port, server_process, serving

__all__ = [
    "COOKIE",
    "FAST_HASHER",
    "LIFESPAN_TIMEOUT",
    "PASSWORD",
    "PROBLEM",
    "SHARED_SECRET",
    "TOKENWARD",
    "Api",
    "FakeClock",
    "Server",
    "acli",
    "cli",
    "counts",
    "drop_database",
    "flush_redis",
    "free_port",
    "headers_without_request_id",
    "make_settings",
    "new_database",
    "ok",
    "refresh_cookie",
    "server_process",
    "serving",
    "without_request_id",
]
