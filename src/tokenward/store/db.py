"""The database handle: engines, transactions, and migrations at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["Database", "alembic_config"]


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("tokenward.store") / "migrations")
    )
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from the driver so that BEGIN is ours (see _begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",  # readers never block the writer
        "synchronous=NORMAL",  # safe against process crashes in WAL mode
        "busy_timeout=10000",
        "foreign_keys=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class Database:
    """Two ways in: ``write()`` for transactions that change rows, ``read()`` for the rest.

    On SQLite, writes start with ``BEGIN IMMEDIATE`` so that a transaction which reads and then
    writes never fails half-way with "database is locked", and they queue on one pooled
    connection instead of spinning in SQLite's busy handler. Reads use plain ``BEGIN`` on their
    own pool and never wait for the writer (WAL). On PostgreSQL both are the same engine.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            self._prepare_sqlite_file(url)
            self.write_engine = self._sqlite_engine(url, "BEGIN IMMEDIATE", pool_size=1, echo=echo)
            self.read_engine = self._sqlite_engine(url, "BEGIN", pool_size=4, echo=echo)
        else:
            self.write_engine = create_async_engine(url, echo=echo, pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._writer = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @staticmethod
    def _prepare_sqlite_file(url: str) -> None:
        database = make_url(url).database
        if database and database != ":memory:":
            # The database holds password hashes: keep the folder private to its owner.
            Path(database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    @staticmethod
    def _sqlite_engine(url: str, begin: str, *, pool_size: int, echo: bool) -> AsyncEngine:
        engine = create_async_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=0, pool_timeout=30
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)

        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql(begin)

        event.listen(engine.sync_engine, "begin", _begin)
        return engine

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits on success and rolls back on any exception."""
        async with self._writer.begin() as session:
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._reader() as session:
            yield session

    async def migrate(self) -> None:
        """Apply every pending migration (idempotent)."""

        def _upgrade(connection: Connection) -> None:
            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with self.write_engine.begin() as connection:
            await connection.run_sync(_upgrade)

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
