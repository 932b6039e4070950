"""A fresh database per test on the PostgreSQL run (None on SQLite), and the Redis flush.

Each database is a copy of a template that the session migrated once, with the app's own
``Database.migrate()`` (Alembic ``upgrade head``, what ``AuthService.open`` runs): the same
schema as a new database that the app migrates, for a fraction of the time (the app's migration
at start then finds it current). No one connects to the template after that, and no test gets a
database that another has used. The copies are made ahead, and dropped after, on a thread of
their own over one connection, so that a test waits for neither (nor for a psql process).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from support.pgcluster import PostgresCluster

TEMPLATE = "test_template"
AHEAD = 2  # databases made while the tests before theirs run


class FreshDatabases:
    """The PostgreSQL run's databases: copies of a migrated template, made ahead of use."""

    def __init__(self, cluster: PostgresCluster) -> None:
        import asyncpg

        self.cluster = cluster
        self._numbers = itertools.count()
        # One thread with its own event loop and connection: the statements run one at a time,
        # in the order asked, whatever event loop (if any) the asking test runs.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-databases")
        self._loop = asyncio.new_event_loop()
        dsn = cluster.url().replace("postgresql+asyncpg://", "postgresql://", 1)
        self._connection = self._submit(lambda: asyncpg.connect(dsn)).result()
        self._submit(self._make_template).result()
        self._ready: deque[tuple[str, Future[None]]] = deque()
        self._dropping: list[Future[None]] = []
        for _ in range(AHEAD):
            self._make_one()

    def _submit(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> Future[Any]:
        return self._worker.submit(lambda: self._loop.run_until_complete(work()))

    async def _make_template(self) -> None:
        from tokenward.storage import Database

        await self._connection.execute(f"CREATE DATABASE {TEMPLATE}")
        database = Database(self.cluster.url(TEMPLATE))
        try:
            await database.migrate()
        finally:
            await database.dispose()
        # A copy needs its template unused (and unchanged): closed to connections from now on.
        await self._connection.execute(
            f"ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        )

    def _make_one(self) -> None:
        name = f"test_{next(self._numbers)}"
        # FILE_COPY (a checkpoint, then a copy of the template's few files): twice as fast here
        # as the default WAL_LOG, which logs every page and pays off for large templates only.
        sql = f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY"
        self._ready.append((name, self._submit(lambda: self._connection.execute(sql))))

    def new(self) -> str:
        name, made = self._ready.popleft()
        self._make_one()  # queued behind this one: made while its test runs
        made.result()
        return self.cluster.url(name)

    def drop(self, name: str) -> None:
        # A failed drop is kept for close() to raise; the finished others are forgotten.
        self._dropping = [f for f in self._dropping if not f.done() or f.exception() is not None]
        sql = f"DROP DATABASE {name} WITH (FORCE)"
        self._dropping.append(self._submit(lambda: self._connection.execute(sql)))

    def close(self) -> None:
        """Waits for the drops (raising a failed one's error); unused copies go with the
        cluster's data folder."""
        try:
            for future in self._dropping:
                future.result()
        finally:
            self._submit(self._connection.close).result()
            self._worker.shutdown()
            self._loop.close()


class _Fresh:
    """The PostgreSQL run's databases, set by conftest; None on SQLite."""

    databases: FreshDatabases | None = None


fresh = _Fresh()


def new_database() -> str | None:
    """On the PostgreSQL run, the URL of a new database at the head migration (None on SQLite).

    For tests that need several clean starts within one test, such as hypothesis examples.
    """
    return None if fresh.databases is None else fresh.databases.new()


def drop_database(url: str | None) -> None:
    """Drops a database from new_database(), in the background."""
    if url is not None and fresh.databases is not None:
        fresh.databases.drop(url.rsplit("/", 1)[1])


def flush_redis(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()
