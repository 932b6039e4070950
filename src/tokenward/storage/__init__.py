"""Persistence: SQLAlchemy 2 models, the database handle and Alembic migrations."""

from tokenward.storage.db import Database
from tokenward.storage.models import (
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
