"""Persistence: SQLAlchemy 2 models, the database handle and Alembic migrations."""

from tokenward.store.db import Database
from tokenward.store.models import Base, EventRow, SessionRow, UserRow

__all__ = ["Base", "Database", "EventRow", "SessionRow", "UserRow"]
