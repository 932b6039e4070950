"""Persistence: SQLAlchemy 2 models, the database handle and Alembic migrations."""

from tokenward.store.db import Database
from tokenward.store.models import (
    Base,
    ClientRow,
    EventRow,
    RevocationRow,
    SessionRow,
    SigningKeyRow,
    UserRow,
)

__all__ = [
    "Base",
    "ClientRow",
    "Database",
    "EventRow",
    "RevocationRow",
    "SessionRow",
    "SigningKeyRow",
    "UserRow",
]
