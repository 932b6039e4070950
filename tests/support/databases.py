"""A fresh database per test on the PostgreSQL run (None on SQLite), and the Redis flush."""

from __future__ import annotations

import itertools

from support.pgcluster import PostgresCluster

_database_numbers = itertools.count()


class _Fresh:
    """The PostgreSQL run's cluster, set by conftest; None on SQLite."""

    cluster: PostgresCluster | None = None


fresh = _Fresh()


def new_database() -> str | None:
    """On the PostgreSQL run, the URL of a new empty database (None on SQLite).

    For tests that need several clean starts within one test, such as hypothesis examples.
    """
    if fresh.cluster is None:
        return None
    name = f"test_{next(_database_numbers)}"
    fresh.cluster.psql(f"CREATE DATABASE {name}")
    return fresh.cluster.url(name)


def drop_database(url: str | None) -> None:
    if url is not None and fresh.cluster is not None:
        fresh.cluster.psql(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")


def flush_redis(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()
