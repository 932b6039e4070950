"""A real PostgreSQL for the refresh scenario, from the pgserver wheel's binaries.

The test suite's ``tests/support/pgcluster.py`` does the work (initdb, pg_ctl, an unprivileged user
when run as root); here it runs durable (fsync on, as deployed). The postmaster and the
processes it has started are pinned to the server core afterwards, and the backends it forks
later inherit that, so tokenward and its database share one core as SQLite does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from servers import REPO, SERVER_CORE, process_tree

if TYPE_CHECKING:
    from support.pgcluster import PostgresCluster

DATABASE = "tokenward"


def _cluster() -> PostgresCluster:
    sys.path.insert(0, str(REPO / "tests"))  # support/pgcluster.py belongs to the tests
    from support.pgcluster import PostgresCluster

    return PostgresCluster(durable=True)


def postmaster_pid(cluster: PostgresCluster) -> int:
    return int((cluster.pgdata / "postmaster.pid").read_text().split()[0])


def pin(pid: int) -> int:
    """Pin a process and its descendants to the server core; return how many."""
    tree = process_tree(pid)
    for member in tree:
        try:
            os.sched_setaffinity(member, {int(SERVER_CORE)})
        except ProcessLookupError:
            continue  # a backend that ended meanwhile
    return len(tree)


def version() -> str:
    sys.path.insert(0, str(REPO / "tests"))
    from support.pgcluster import POSTGRES_BIN_PATH

    done = subprocess.run(
        [str(POSTGRES_BIN_PATH / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return done.stdout.strip() or "unknown"


@dataclass(frozen=True)
class Database:
    url: str  # SQLAlchemy's
    postmaster_pid: int


@contextmanager
def database() -> Iterator[Database]:
    """A running PostgreSQL pinned to the server core, with an empty database."""
    cluster = _cluster()
    try:
        cluster.start()
        cluster.psql(f"CREATE DATABASE {DATABASE}")
        postmaster = postmaster_pid(cluster)
        pin(postmaster)
        yield Database(cluster.url(DATABASE), postmaster)
    finally:
        cluster.close()
