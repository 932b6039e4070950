"""What an attack must not change, and the problem+json media type."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from tokenward.storage import SessionRow, UserRow

PROBLEM = "application/problem+json"


async def counts(service: Any) -> tuple[int, int, int]:
    """(users, sessions, sum of generations): what an attack must not change."""
    async with service.db.read() as db:
        users = (await db.execute(select(func.count()).select_from(UserRow))).scalar_one()
        sessions = (await db.execute(select(func.count()).select_from(SessionRow))).scalar_one()
        generations = (
            await db.execute(select(func.coalesce(func.sum(SessionRow.generation), 0)))
        ).scalar_one()
    return int(users), int(sessions), int(generations)
