"""The database handle: engines, transactions, and migrations at start."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tokenward.exceptions import SchemaVersionError, UnavailableError
from tokenward.infra import metrics
from tokenward.infra.metrics import DatabaseErrorKind
from tokenward.infra.tracing import trace_database, tracing_enabled
from tokenward.storage.errors import RetryableConflict, outage_kind
from tokenward.storage.sqlite_fast import SqliteWriter

if TYPE_CHECKING:
    from tokenward.storage.pg_fast import PgRotations

__all__ = [
    "NO_KEY_UPDATE",
    "Database",
    "DatabaseError",
    "RetryableConflict",
    "alembic_config",
    "hold_lock",
    "retrying",
]

DatabaseError = SQLAlchemyError
"""Any error of the database layer that was not translated into one of tokenward's own."""

# Row lock for changing a user: FOR NO KEY UPDATE does not block the key-share locks that
# inserting a session or an event takes on the user row, so it cannot deadlock with them.
NO_KEY_UPDATE = {"key_share": True}

logger = logging.getLogger(__name__)

R = TypeVar("R")

# PostgreSQL asks for a retry with these: serialization_failure, deadlock_detected.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
# Classes that mean the server is out of reach or going away: connection exception,
# insufficient resources, operator intervention (shutdown, "the database system is starting").
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
# How long a connection attempt or a pooled-connection wait may take before a 503.
CONNECT_TIMEOUT = 5.0
# How long a request may queue for a pooled connection under overload before its 503: long
# enough that a burst (200 clients on 20 connections) queues instead of failing.
POOL_TIMEOUT = 30.0
RETRY_ATTEMPTS = 4


def _sqlstate(error: DBAPIError) -> str | None:
    code = getattr(error.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def _translate(error: BaseException) -> BaseException:
    """The exception to raise instead of a driver's, or ``error`` itself when it is ours;
    counted by kind (``tokenward_database_errors_total``)."""
    translated = _translated(error)
    if translated is not error:
        metrics.current().database_error(_kind(error, translated))
    return translated


def _kind(error: BaseException, translated: BaseException) -> DatabaseErrorKind:
    if isinstance(translated, RetryableConflict):
        return DatabaseErrorKind.CONFLICT
    return outage_kind(
        timed_out=isinstance(error, (PoolTimeoutError, TimeoutError)),
        sqlstate=_sqlstate(error) if isinstance(error, DBAPIError) else None,
    )


def _translated(error: BaseException) -> BaseException:
    if isinstance(error, IntegrityError):
        return error
    if isinstance(error, DBAPIError):
        code = _sqlstate(error) or ""
        message = str(error.orig)
        if code in _RETRY_SQLSTATES or "database is locked" in message:
            return RetryableConflict(code or "locked")
        if (
            error.connection_invalidated
            or code.startswith(_UNAVAILABLE_SQLSTATE_CLASSES)
            or error.__class__.__name__ in {"OperationalError", "InterfaceError"}
        ):
            return UnavailableError("database", code or error.__class__.__name__)
        return error
    if isinstance(error, PoolTimeoutError):
        return UnavailableError("database", "no free connection")
    if isinstance(error, (OSError, TimeoutError)):
        return UnavailableError("database", error.__class__.__name__)
    return error


async def retrying(transaction: Callable[[], Coroutine[Any, Any, R]]) -> R:
    """Run one transaction again when the database rolled it back as a conflict (bounded).

    Wraps the transaction alone, never the work around it: a password hash or a rate-limit
    hit that came before it is not repeated, so a conflict never charges a request twice.
    """
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return await transaction()
        except RetryableConflict as conflict:
            logger.info("retrying a transaction after a conflict (%s)", conflict)
            await asyncio.sleep(0.01 * 2**attempt)
    raise UnavailableError("database", "conflicts persisted")


async def hold_lock(db: AsyncSession, name: str) -> None:
    """Take the lock ``name`` until the end of ``db``'s transaction (PostgreSQL).

    SQLite needs none: ``BEGIN IMMEDIATE`` already makes every write transaction take turns.
    """
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("tokenward.storage") / "migrations")
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


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Driver errors that mean "busy" or "unreachable" become ours; the rest pass unchanged."""
    try:
        yield
    except Exception as error:
        translated = _translate(error)
        if translated is error:
            raise
        raise translated from error


def _refuse_unknown_revision(config: Config, connection: Connection) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    current = MigrationContext.configure(connection).get_current_revision()
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if current is not None and current not in known:
        raise SchemaVersionError(
            f"the database is at migration {current}, which this version of tokenward does "
            "not know: a newer version migrated it; run that version or restore a backup"
        )


def _lock_key(name: str) -> int:
    # A stable 64-bit key per lock name (pg_advisory_xact_lock takes a bigint).
    return int.from_bytes(zlib.crc32(b"tokenward:" + name.encode()).to_bytes(4, "big"), "big")


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
            self.write_engine = create_async_engine(
                url,
                echo=echo,
                hide_parameters=True,  # an error's message never quotes an address or a hash
                pool_pre_ping=True,  # a connection the server dropped is replaced, not used
                pool_size=10,
                max_overflow=10,
                pool_timeout=POOL_TIMEOUT,
                connect_args={"timeout": CONNECT_TIMEOUT},
            )
            self.read_engine = self.write_engine
        if tracing_enabled():  # TOKENWARD_OTEL: a span per statement (infra/tracing.py)
            for engine in dict.fromkeys((self.write_engine, self.read_engine)):
                trace_database(engine)
        self._writer = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self._marker: sqlite3.Connection | None = None
        self._fast_writer: SqliteWriter | None = None
        self._pg_rotations: PgRotations | None = None
        database = make_url(url).database
        self._marker_path = (
            database if self.is_sqlite and database not in (None, "", ":memory:") else None
        )

    def rotations(self) -> SqliteWriter | PgRotations | None:
        """The lean adapter for the refresh rotation: plain sqlite3 on a SQLite file (made on
        first use), asyncpg on PostgreSQL; None for an in-memory SQLite database."""
        if not self.is_sqlite:
            if self._pg_rotations is None:
                from tokenward.storage.pg_fast import PgRotations  # the postgres extra's asyncpg

                self._pg_rotations = PgRotations(self.url)
            return self._pg_rotations
        if self._marker_path is None:
            return None
        if self._fast_writer is None:
            self._fast_writer = SqliteWriter(self._marker_path)
        return self._fast_writer

    def change_marker(self) -> int | None:
        """A number that changes whenever anyone commits to the database, or None.

        SQLite's ``PRAGMA data_version``, read on a connection of its own that never writes:
        it changes with every commit by any other connection or process, and reading it costs
        microseconds (no I/O). Lets callers keep what they read until the next commit anywhere.
        PostgreSQL has no such number: None, and callers read afresh.
        """
        if self._marker_path is None:
            return None
        if self._marker is None:
            self._marker = sqlite3.connect(
                self._marker_path, isolation_level=None, check_same_thread=False
            )
        row = self._marker.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    @staticmethod
    def _prepare_sqlite_file(url: str) -> None:
        """The database holds password hashes and sessions: its folder is made 0700 and its
        file 0600 (an empty file is an empty database), and ones that are already there are
        tightened to that when they are ours (a shared sticky folder such as /tmp is left
        alone). SQLite gives the -wal and -shm files the database file's mode."""
        import contextlib
        import os
        import stat

        parsed = make_url(url)
        database = parsed.database
        if not database or database == ":memory:" or parsed.query.get("uri"):
            return
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name != "posix":
            return
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        owner = os.geteuid()
        companions = [path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal")]
        for item in [path.parent, path, *companions]:
            try:
                info = item.stat()
            except FileNotFoundError:
                continue
            mode = stat.S_IMODE(info.st_mode)
            if info.st_uid != owner or not mode & 0o077 or info.st_mode & stat.S_ISVTX:
                continue
            os.chmod(item, mode & ~0o077)
            logger.warning("%s was open to other users (mode %04o): made it private", item, mode)

    @staticmethod
    def _sqlite_engine(url: str, begin: str, *, pool_size: int, echo: bool) -> AsyncEngine:
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,  # an error's message never quotes an address or a hash
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=30,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)

        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql(begin)

        event.listen(engine.sync_engine, "begin", _begin)
        return engine

    @asynccontextmanager
    async def write(self, *, lock: str | None = None) -> AsyncIterator[AsyncSession]:
        """A transaction that commits on success and rolls back on any exception.

        ``lock`` names a lock held until the end of the transaction, so that instances doing
        the same singular job (making the first key, rotating it) take turns. SQLite's
        ``BEGIN IMMEDIATE`` already serialises every write.
        """
        with _translated_errors():
            async with self._writer.begin() as session:
                if lock is not None:
                    await hold_lock(session, lock)
                yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        with _translated_errors():
            async with self._reader() as session:
                yield session

    async def ping(self) -> None:
        """One round trip; raises :class:`UnavailableError` when the database is out of reach."""
        async with self.read() as db:
            await db.execute(text("SELECT 1"))

    async def migrate(self) -> None:
        """Apply every pending migration (idempotent; instances starting together take turns)."""
        await self.run_alembic(lambda config: command.upgrade(config, "head"))

    async def run_alembic(self, operation: Callable[[Config], object]) -> None:
        """Run an Alembic command on one connection, under the migration lock."""

        def _run(connection: Connection) -> None:
            config = alembic_config(self.url)
            _refuse_unknown_revision(config, connection)
            config.attributes["connection"] = connection
            operation(config)

        with _translated_errors():
            async with self.write_engine.begin() as connection:
                if not self.is_sqlite:
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key("migrate")}
                    )
                await connection.run_sync(_run)

    async def revision(self) -> tuple[str | None, str]:
        """(the database's migration revision, the newest one this code ships)."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        def _current(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        with _translated_errors():
            async with self.read_engine.connect() as connection:
                current = await connection.run_sync(_current)
                await connection.run_sync(
                    lambda sync: _refuse_unknown_revision(alembic_config(self.url), sync)
                )
        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()
        assert head is not None  # noqa: S101 - the package ships its migrations
        return current, head

    async def dispose(self) -> None:
        if self._marker is not None:
            self._marker.close()
            self._marker = None
        if self._fast_writer is not None:
            self._fast_writer.close()
            self._fast_writer = None
        if self._pg_rotations is not None:
            await self._pg_rotations.close()
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
