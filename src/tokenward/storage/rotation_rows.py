"""What both lean rotation adapters share: the load query, the row-to-Session mapping and the
audit row's values.

The SQL differs between the drivers only in the placeholder; the values differ only in how a
timestamp travels (text with ``sqlite3``, a datetime with asyncpg), which ``moment`` converts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tokenward.core.events import NewEvent
from tokenward.core.mfa import Authentication
from tokenward.core.roles import Grants
from tokenward.core.sessions import RotationOutcome, Session

__all__ = [
    "Rotated",
    "event_values",
    "load_query",
    "loaded_grants",
    "loaded_session",
]


@dataclass(frozen=True, slots=True)
class Rotated:
    """What a rotation decided, and the user's grants as its transaction saw them."""

    outcome: RotationOutcome
    grants: Grants


_LOAD = (
    "SELECT s.user_id, s.generation, s.created_at, s.last_used_at, s.expires_at,"
    " s.max_expires_at, s.rotated_at, s.revoked_at, s.revoked_reason, s.last_ip,"
    " s.last_user_agent, u.disabled_at IS NOT NULL, u.held_roles, u.held_permissions,"
    " s.amr, s.auth_time, s.mfa_time"
    " FROM sessions AS s JOIN users AS u ON u.id = s.user_id WHERE s.id = {}"
)


def load_query(placeholder: Literal["?", "$1"]) -> str:
    """The session by id, joined to whether its user is disabled and to the roles and
    permissions the user holds (``users.held_*``, kept by storage.sql), with no lock."""
    return _LOAD.format(placeholder)


def loaded_grants(row: Sequence[Any]) -> Grants:
    """The grants of a row of :func:`load_query`."""
    return Grants.parse(row[12], row[13])


def loaded_session(
    session_id: str, row: Sequence[Any], moment: Callable[[Any], datetime]
) -> tuple[Session, bool]:
    """(the session, its user disabled?) from a row of :func:`load_query`."""

    def maybe(value: Any) -> datetime | None:
        return None if value is None else moment(value)

    session = Session(
        id=session_id,
        user_id=row[0],
        generation=row[1],
        created_at=moment(row[2]),
        last_used_at=moment(row[3]),
        expires_at=moment(row[4]),
        max_expires_at=moment(row[5]),
        rotated_at=maybe(row[6]),
        revoked_at=maybe(row[7]),
        revoked_reason=row[8],
        last_ip=row[9],
        last_user_agent=row[10],
        authentication=Authentication.load(
            row[14], maybe(row[15]), maybe(row[16]), created_at=moment(row[2])
        ),
    )
    return session, bool(row[11])


def event_values(event: NewEvent, moment: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """An audit row's values (at, type, user_id, session_id, ip, user_agent, detail), as the
    SQLAlchemy models write them; ``moment`` renders the time for the driver."""
    return (
        moment(event.at),
        event.kind.value,
        event.user_id,
        event.session_id,
        event.client.ip,
        event.client.user_agent,
        json.dumps(event.detail),
    )
