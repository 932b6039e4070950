"""The refresh rotation on PostgreSQL in asyncpg: one or two round trips, no transaction held.

Through SQLAlchemy the rotation took seven round trips (BEGIN, the locked session, the user,
the update, the event, COMMIT, and the pool's ping) and most of a core's time in the ORM.
Here it is optimistic and one statement each way:

1. read the session and whether its user is disabled (autocommit, no lock);
2. let the one rule (``Session.rotate``) decide;
3. write the successor and its audit row in one statement (which also reads the user's
   roles for the token), conditional on the session still
   being at the generation that was read and not ended. The statement is its own transaction,
   so both rows or neither are written. When the condition fails (a racing rotation, a logout,
   a password change, a disabling: each ends the session or moves the generation)
   :class:`RetryableConflict` sends the caller round again, to read what won and decide anew.

A session this process rotated last skips step 1 (see :meth:`PgRotations.rotate`): the
conditional write is what makes a decision on remembered state safe.

Anything but a plain rotation (ending a reused session, which writes the revocation log in
its commit order) is declined and left to the SQLAlchemy unit of work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
from sqlalchemy.engine import make_url

from tokenward.core.mfa import Authentication
from tokenward.core.refresh import Rotation
from tokenward.core.roles import Grants
from tokenward.core.sessions import RotationOutcome, Session
from tokenward.exceptions import SessionEndedError, TokenError, UnavailableError
from tokenward.infra import metrics
from tokenward.infra.metrics import DatabaseErrorKind
from tokenward.infra.observe import committed
from tokenward.storage.errors import FastPathDeclined, RetryableConflict, outage_kind
from tokenward.storage.rotation_rows import (
    Rotated,
    event_values,
    load_query,
    loaded_grants,
    loaded_session,
)

if TYPE_CHECKING:
    from tokenward.storage.port import Decide

__all__ = ["PgRotations", "asyncpg_dsn"]

POOL_SIZE = 10
CONNECT_TIMEOUT = 5.0
KNOWN_SESSIONS = 50_000
"""Sessions remembered per process as this process last wrote them; the oldest go first."""
ACQUIRE_TIMEOUT = 30.0
"""As long as the SQLAlchemy pool waits for a connection under overload before its 503."""

_LOAD = load_query("$1")
# The successor, its audit row, and the roles the user holds and how the session authenticated
# as this statement's snapshot has them (a data-modifying WITH runs to completion whether or
# not the SELECT reads it).
_ROTATE = (
    "WITH moved AS ("
    " UPDATE sessions SET generation = $3, rotated_at = $4, last_used_at = $5,"
    " expires_at = $6, last_ip = $7, last_user_agent = $8"
    " WHERE id = $1 AND generation = $2 AND revoked_at IS NULL"
    " RETURNING id, user_id, amr, auth_time, mfa_time),"
    " logged AS (INSERT INTO events (at, type, user_id, session_id, ip, user_agent, detail)"
    " SELECT $9, $10, $11, $12, $13, $14, $15::json FROM moved)"
    " SELECT u.held_roles, u.held_permissions, moved.amr, moved.auth_time, moved.mfa_time"
    " FROM moved JOIN users AS u ON u.id = moved.user_id"
)

# PostgreSQL asks for a retry with these: serialization_failure, deadlock_detected.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def asyncpg_dsn(url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class PgRotations:
    """A small asyncpg pool of its own, made on first use, for the rotation alone."""

    def __init__(self, url: str) -> None:
        self._dsn = asyncpg_dsn(url)
        self._pool: asyncpg.Pool | None = None
        self._making = asyncio.Lock()
        self._known: dict[str, Session] = {}

    async def rotate(self, session_id: str, decide: Decide) -> Rotated:
        """Read, decide, write conditionally (see the module's note).

        A session this process rotated last is not read again: the rule decides on the state
        it wrote, and the conditional write checks that state is still the database's. When
        it is not (another instance rotated or ended the session), or the remembered state
        leads to anything but a plain rotation, the session is read afresh and decided again.
        """
        async with self._connection() as connection:
            known = self._known.pop(session_id, None)
            if known is not None:
                try:
                    outcome: RotationOutcome | None = decide((known, False))
                except (TokenError, SessionEndedError):
                    outcome = None  # decided on what may be stale: read it afresh
                rotates = outcome is not None and outcome.decision is Rotation.ROTATE
                if rotates and outcome:
                    rotated = await self._write(connection, outcome)
                    if rotated is not None:
                        return rotated
            row = await connection.fetchrow(_LOAD, session_id)
            loaded = None if row is None else loaded_session(session_id, row, _utc)
            outcome = decide(loaded)
            if outcome.decision is Rotation.REPLAY_SUCCESSOR:
                assert row is not None  # noqa: S101 - an unknown session raised in decide
                return Rotated(outcome, loaded_grants(row))  # nothing to write
            if outcome.decision is not Rotation.ROTATE:
                raise FastPathDeclined("an ending is written by the unit of work")
            rotated = await self._write(connection, outcome)
            if rotated is None:
                raise RetryableConflict("rotation lost a race")
        return rotated

    async def _write(
        self, connection: asyncpg.Connection, outcome: RotationOutcome
    ) -> Rotated | None:
        """The successor and its audit row, if the session is still as it was read, with the
        user's grants and the session's authentication then (a reauthentication may have
        renewed it since this process remembered the session); None when it moved on."""
        session = outcome.session
        assert outcome.event is not None  # noqa: S101 - a rotation records one
        row = await connection.fetchrow(
            _ROTATE,
            session.id,
            session.generation - 1,
            session.generation,
            session.rotated_at,
            session.last_used_at,
            session.expires_at,
            session.last_ip,
            session.last_user_agent,
            *event_values(outcome.event, _utc),
        )
        if row is None:
            return None
        # The statement was its own transaction: committed.
        committed((outcome.event,))
        authentication = Authentication.load(
            row[2],
            None if row[3] is None else _utc(row[3]),
            None if row[4] is None else _utc(row[4]),
            created_at=session.created_at,
        )
        session = replace(session, authentication=authentication)
        if len(self._known) >= KNOWN_SESSIONS:
            self._known.pop(next(iter(self._known)))  # the oldest entry
        self._known[session.id] = session
        return Rotated(replace(outcome, session=session), Grants.parse(row[0], row[1]))

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            pool = self._pool or await self._make_pool()
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as connection:
                yield connection
        except asyncpg.PostgresError as error:
            code = getattr(error, "sqlstate", None) or ""
            if code in _RETRY_SQLSTATES:
                metrics.current().database_error(DatabaseErrorKind.CONFLICT)
                raise RetryableConflict(code) from error
            if code.startswith(("08", "53", "57")):
                metrics.current().database_error(outage_kind(timed_out=False, sqlstate=code))
                raise UnavailableError("database", code) from error
            raise
        except (OSError, TimeoutError, asyncpg.InterfaceError) as error:
            timed_out = isinstance(error, TimeoutError)
            metrics.current().database_error(outage_kind(timed_out=timed_out, sqlstate=None))
            raise UnavailableError("database", error.__class__.__name__) from error

    async def _make_pool(self) -> asyncpg.Pool:
        async with self._making:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
