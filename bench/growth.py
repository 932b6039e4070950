"""A tokenward database with many stored sessions, seeded straight into the SQLite file.

    .venv/bin/python bench/growth.py --sessions 1000000   # seed one, print what it holds

How: start tokenward once on a fresh data dir (migrations run, keys are made), register and
log in once, stop it. That login's row is the template: every seeded session copies its
columns and gets its own id, user, times and generation. The seeded users (one per
``SESSIONS_PER_USER`` sessions) copy the real user's row, password hash included (nobody logs
in as them). Then ``tokenward db prune`` with the same data dir, as an operator would.

Speed: ids are inserted in sorted order (appends to the primary-key index), the secondary
indexes of ``sessions`` are dropped and rebuilt with their own SQL inside the same
transaction (one sort instead of a million random inserts), and timestamps are taken from a
precomputed table instead of being formatted per row.

The mix: 90% live, 5% ended within the last day (kept by prune: its grace is one day), 5%
ended one to six days ago (what an hourly prune that was off for a while leaves; prune
deletes them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

from accounts import login, register
from servers import REPO, TOKENWARD_CLI, WORK, log, running, tokenward_env, tokenward_server

SESSIONS_PER_USER = 10
TICK = timedelta(minutes=1)  # the resolution of seeded times
DAY = 1440  # ticks
HOUR = 60  # ticks
STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DateTime on SQLite
REASONS = ("logout", "logout", "logout", "logout_all", "password_changed", "reuse_detected")


@dataclass(frozen=True)
class SeededDatabase:
    data_dir: Path
    seeded: int  # session rows inserted
    seed_seconds: float
    prune_report: str  # what `tokenward db prune` printed
    prune_seconds: float
    sessions: int  # after prune
    live_sessions: int
    users: int
    events: int
    file_bytes: int  # the database file plus its WAL, after prune
    free_bytes: int  # pages SQLite keeps for reuse (deleted rows do not shrink the file)


def jitter(tick: int) -> timedelta:
    """Under a second, so that seeded times do not all look rounded to the minute."""
    return timedelta(microseconds=tick * 7919 % 999_983)


class Stamps:
    """Formatted UTC times, one per tick, from ``past_days`` ago to ``future_days`` ahead."""

    def __init__(self, now: datetime, past_days: int = 45, future_days: int = 31) -> None:
        self.ahead = future_days * DAY
        naive = now.astimezone(UTC).replace(tzinfo=None)
        self.table = [
            (naive - (k - self.ahead) * TICK + jitter(k)).strftime(STAMP_FORMAT)
            for k in range((past_days + future_days) * DAY)
        ]

    def ago(self, ticks: int) -> str:
        """The time ``ticks`` before now (negative: after)."""
        return self.table[ticks + self.ahead]


SEEDED_COLUMNS = (
    "created_at",
    "last_used_at",
    "rotated_at",
    "expires_at",
    "max_expires_at",
    "revoked_at",
    "generation",
    "revoked_reason",
)


def between(random: Callable[[], float], low: int, high: int) -> int:
    """low <= n < high; random.randrange is several times slower, and this runs 4M times."""
    return low + int(random() * (high - low))


def session_times(random: Callable[[], float]) -> tuple[Any, ...]:
    """One session's SEEDED_COLUMNS: times in ticks ago (idle timeout 7 days, max age 30)."""
    kind = random()
    if kind < 0.95:  # live, or ended within the last day
        created = between(random, 1, 30 * DAY)
        last = between(random, 0, min(created, 7 * DAY))
        revoked = between(random, 0, min(last, 23 * HOUR) + 1) if kind >= 0.90 else None
    elif kind < 0.975:  # logged out one to six days ago
        created = between(random, 2 * DAY, 30 * DAY)
        last = between(random, DAY + HOUR, min(created, 6 * DAY))
        revoked = between(random, DAY + HOUR, last + 1)
    else:  # idle past the 7-day timeout, one to six days ago
        last = between(random, 8 * DAY + HOUR, 13 * DAY)
        created = between(random, last, 37 * DAY)
        revoked = None
    generation = between(random, 1, 200) if last < created else 0
    return (
        created,
        last,
        last if generation else None,
        max(last - 7 * DAY, created - 30 * DAY),  # the earlier of the two ends
        created - 30 * DAY,
        revoked,
        generation,
        REASONS[int(random() * len(REASONS))] if revoked is not None else None,
    )


def sorted_uuids(count: int) -> list[str]:
    """Random (version 4) UUIDs as text, sorted: cheap to make, cheap to index in order."""
    digits = os.urandom(16 * count).hex()
    ids = []
    for n in range(count):
        h = digits[32 * n : 32 * n + 32]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}")
    ids.sort()
    return ids


def one_row(db: sqlite3.Connection, table: str) -> dict[str, Any]:
    cursor = db.execute(f"SELECT * FROM {table} LIMIT 1")
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError(f"no row in {table} to copy")
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def check_stamp_format(template: dict[str, Any]) -> None:
    stored = template["created_at"]
    if datetime.fromisoformat(stored).strftime(STAMP_FORMAT) != stored:
        raise RuntimeError(f"sessions.created_at is stored as {stored!r}: update STAMP_FORMAT")


def user_rows(
    template: dict[str, Any], ids: list[str], stamps: Stamps
) -> Iterator[tuple[Any, ...]]:
    joined = stamps.ago(40 * DAY)
    for n, user_id in enumerate(ids):
        row = template | {
            "id": user_id,
            "email": f"seed-{n:07d}@bench.example",
            "created_at": joined,
            "password_changed_at": joined,
        }
        yield tuple(row.values())


def session_rows(
    template: dict[str, Any], count: int, users: list[str], stamps: Stamps
) -> Iterator[list[Any]]:
    random = Random(42).random
    columns = list(template)
    base = list(template.values())
    id_at, user_at = columns.index("id"), columns.index("user_id")
    seeded = [(columns.index(c), c.endswith("_at")) for c in SEEDED_COLUMNS]
    table, ahead = stamps.table, stamps.ahead
    for session_id in sorted_uuids(count):
        row = base.copy()  # the template's values in column order: a list is what's fast
        row[id_at], row[user_at] = session_id, users[int(random() * len(users))]
        for (index, is_time), value in zip(seeded, session_times(random), strict=True):
            row[index] = table[value + ahead] if is_time and value is not None else value
        yield row


def insert(db: sqlite3.Connection, table: str, rows: Iterator[Sequence[Any]], width: int) -> None:
    marks = ", ".join("?" * width)
    db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def seed(db_path: Path, count: int) -> None:
    """Insert ``count`` sessions (and their users) in one transaction."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as db:
        db.execute("PRAGMA synchronous=OFF")  # a bench database: a crash just means rerun
        db.execute("PRAGMA cache_size=-262144")  # 256 MiB: the indexes fit while they build
        session, user = one_row(db, "sessions"), one_row(db, "users")
        check_stamp_format(session)
        stamps = Stamps(datetime.now(UTC))
        users = sorted_uuids(max(1, count // SESSIONS_PER_USER))
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = 'sessions' AND sql IS NOT NULL"
        ).fetchall()
        db.execute("BEGIN")
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        insert(db, "users", user_rows(user, users, stamps), len(user))
        insert(db, "sessions", session_rows(session, count, users, stamps), len(session))
        for _, sql in indexes:
            db.execute(sql)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def first_start(data_dir: Path) -> None:
    """Migrations, keys, the bench's account and one real session row, then stop."""
    server = tokenward_server(data_dir, name=f"tokenward (first start, {data_dir.name})")
    with running([server]):
        register(server)
        login(server)


def prune(data_dir: Path) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [str(TOKENWARD_CLI), "db", "prune"],
        env=tokenward_env(data_dir),
        cwd=WORK,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tokenward db prune failed: {done.stderr or done.stdout}")
    return done.stdout.strip(), time.monotonic() - started


def count(db: sqlite3.Connection, sql: str, *args: str) -> int:
    value: int = db.execute(sql, args).fetchone()[0]
    return value


def file_bytes(db_path: Path) -> int:
    files = [db_path, db_path.with_name(db_path.name + "-wal")]
    return sum(path.stat().st_size for path in files if path.exists())


def build(data_dir: Path, stored: int) -> SeededDatabase:
    """A data dir holding ``stored`` sessions before prune (the real one included)."""
    log(f"\ngrowth: seeding {stored:,} sessions in {data_dir.relative_to(REPO)}")
    shutil.rmtree(data_dir, ignore_errors=True)
    first_start(data_dir)
    db_path = data_dir / "tokenward.db"
    started = time.monotonic()
    seed(db_path, stored - 1)
    seed_seconds = time.monotonic() - started
    report, prune_seconds = prune(data_dir)
    now = datetime.now(UTC).replace(tzinfo=None).strftime(STAMP_FORMAT)
    with closing(sqlite3.connect(db_path)) as db:
        live = count(
            db,
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL "
            "AND expires_at > ? AND max_expires_at > ?",
            now,
            now,
        )
        page_size = count(db, "PRAGMA page_size")
        seeded = SeededDatabase(
            data_dir=data_dir,
            seeded=stored - 1,
            seed_seconds=seed_seconds,
            prune_report=report,
            prune_seconds=prune_seconds,
            sessions=count(db, "SELECT count(*) FROM sessions"),
            live_sessions=live,
            users=count(db, "SELECT count(*) FROM users"),
            events=count(db, "SELECT count(*) FROM events"),
            file_bytes=file_bytes(db_path),
            free_bytes=count(db, "PRAGMA freelist_count") * page_size,
        )
    log(
        f"  seeded in {seed_seconds:.1f} s; {report} in {prune_seconds:.1f} s; "
        f"{seeded.sessions:,} sessions ({seeded.live_sessions:,} live), "
        f"{seeded.file_bytes / 2**20:.0f} MiB"
    )
    return seeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=WORK / "growth-alone")
    args = parser.parse_args()
    print(build(args.data_dir.resolve(), args.sessions))


if __name__ == "__main__":
    main()
