"""A real PostgreSQL for the refresh scenario, from the pgserver wheel's binaries, and the
database's own figure for the same rotation: pgbench, pinned as wrk is, against the same server.

The test suite's ``tests/support/pgcluster.py`` does the work (initdb, pg_ctl, an unprivileged user
when run as root); here it runs durable (fsync on, as deployed). The postmaster and the
processes it has started are pinned to the server core afterwards, and the backends it forks
later inherit that, so tokenward and its database share one core as SQLite does.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from load import Rounds
from servers import LOAD_CORE, REPO, SERVER_CORE, log, process_tree

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
    cluster: PostgresCluster


@contextmanager
def database() -> Iterator[Database]:
    """A running PostgreSQL pinned to the server core, with an empty database."""
    cluster = _cluster()
    try:
        cluster.start()
        cluster.psql(f"CREATE DATABASE {DATABASE}")
        postmaster = postmaster_pid(cluster)
        pin(postmaster)
        yield Database(cluster.url(DATABASE), postmaster, cluster)
    finally:
        cluster.close()


# -- pgbench: the rotation as raw SQL ------------------------------------------------------

PGBENCH_CLIENTS = 4  # as many as wrk's connections in the refresh scenarios
_SESSION = "'pgbench-' || :client_id"
_USER = "'pgbench-user-' || :client_id"
_EVENT = (
    "INSERT INTO events (at, type, user_id, session_id, ip, user_agent, detail) "
    f"VALUES (now(), 'session.refreshed', {_USER}, {_SESSION}, '127.0.0.1', 'pgbench', 'null');"
)
_MOVE = (
    "generation = generation + 1, rotated_at = now(), last_used_at = now(), "
    "expires_at = now() + interval '7 days', last_ip = '127.0.0.1', last_user_agent = 'pgbench'"
)
SCRIPTS = {
    # The definition: lock the session and the user, bump the generation, write the
    # audit row, commit. Each client has its own session and user, as each wrk connection has.
    "the rotation transaction (lock session and user, update, audit row, commit)": "\n".join(
        [
            "BEGIN;",
            "SELECT s.generation, u.disabled_at FROM sessions AS s JOIN users AS u"
            f" ON u.id = s.user_id WHERE s.id = {_SESSION} FOR UPDATE;",
            f"UPDATE sessions SET {_MOVE} WHERE id = {_SESSION};",
            _EVENT,
            "END;",
        ]
    ),
    # What tokenward's asyncpg adapter sends for a session it rotated last (the steady
    # state of one chain): the conditional update, the audit row and the roles the user holds
    # (for the token), one statement.
    "tokenward's statement (conditional update + audit row + roles)": (
        f"WITH moved AS (UPDATE sessions SET {_MOVE} WHERE id = {_SESSION}"
        " AND revoked_at IS NULL RETURNING id, user_id),"
        " logged AS (INSERT INTO events (at, type, user_id, session_id, ip, user_agent, detail)"
        f" SELECT now(), 'session.refreshed', {_USER}, moved.id, '127.0.0.1', 'pgbench',"
        " 'null' FROM moved)"
        " SELECT u.held_roles, u.held_permissions FROM moved JOIN users AS u"
        " ON u.id = moved.user_id;"
    ),
}
TARGET_SCRIPT = next(iter(SCRIPTS))


@dataclass(frozen=True)
class PgbenchResult:
    script: str
    tps_per_round: list[float]

    @property
    def tps(self) -> float:
        return statistics.median(self.tps_per_round)


def seed(database: Database) -> None:
    """One user and one live session per pgbench client, in tokenward's migrated tables."""
    values = ", ".join(
        f"('pgbench-user-{n}', 'pgbench-{n}@example.com', 'x', now(), now(), 'member',"
        " 'notes:read notes:write')"
        for n in range(PGBENCH_CLIENTS)
    )
    sessions = ", ".join(
        f"('pgbench-{n}', 'pgbench-user-{n}', 0, now(), now(), now() + interval '7 days',"
        " now() + interval '30 days')"
        for n in range(PGBENCH_CLIENTS)
    )
    roles = ", ".join(f"('pgbench-user-{n}', 'member', now())" for n in range(PGBENCH_CLIENTS))
    database.cluster.psql(
        "INSERT INTO users (id, email, password_hash, created_at, password_changed_at,"
        f" held_roles, held_permissions) VALUES {values};"
        " INSERT INTO sessions (id, user_id, generation, created_at, last_used_at,"
        f" expires_at, max_expires_at) VALUES {sessions};"
        # The role the bench account holds (accounts.BENCH_ROLE), if the server made none.
        " INSERT INTO roles (name, permissions, created_at)"
        " VALUES ('member', 'notes:read notes:write', now()) ON CONFLICT DO NOTHING;"
        f" INSERT INTO user_roles (user_id, role, granted_at) VALUES {roles};",
        DATABASE,
    )


def _pgbench_tps(database: Database, script: Path, seconds: int) -> float:
    sys.path.insert(0, str(REPO / "tests"))
    from support.pgcluster import POSTGRES_BIN_PATH

    argv = [
        str(POSTGRES_BIN_PATH / "pgbench"),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={PGBENCH_CLIENTS}",
        "--jobs=1",
        f"--time={seconds}",
        f"--file={script}",
        "-h", "127.0.0.1", "-p", str(database.cluster.port), "-U", "postgres", DATABASE,
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
        preexec_fn=lambda: os.sched_setaffinity(0, {int(LOAD_CORE)}),
    )
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip() or done.stdout.strip()}")
    return float(found.group(1))


def pgbench(database: Database, rounds: Rounds) -> list[PgbenchResult]:
    """Each script: a warm-up, then alternating measured rounds, as the wrk scenarios run."""
    seed(database)
    results: dict[str, list[float]] = {name: [] for name in SCRIPTS}
    with tempfile.TemporaryDirectory(prefix="tokenward-pgbench-") as folder:
        files = {}
        for index, (name, text) in enumerate(SCRIPTS.items()):
            files[name] = Path(folder) / f"script-{index}.sql"
            files[name].write_text(text + "\n")
        for path in files.values():
            if rounds.warmup:
                _pgbench_tps(database, path, rounds.warmup)
        for number in range(1, rounds.count + 1):
            for name, path in files.items():
                tps = _pgbench_tps(database, path, rounds.duration)
                results[name].append(tps)
                log(f"  [pgbench round {number}/{rounds.count}] {tps:8.0f} tps  {name}")
    return [PgbenchResult(name, tps) for name, tps in results.items()]
