"""What an attack must not change, and the problem+json media type."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from tokenward.storage import SessionRow, UserRow

PROBLEM = "application/problem+json"


def without_request_id(response: httpx.Response) -> bytes:
    """The body byte for byte, less the request's id: the one thing two answers that must
    not differ never share (problem+json's ``request_id``)."""
    return response.content.replace(response.headers["x-request-id"].encode(), b"")


def headers_without_request_id(response: httpx.Response) -> list[tuple[str, str]]:
    """The answer's headers, sorted, less its Date and X-Request-ID."""
    return sorted(
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in {"date", "x-request-id"}
    )


async def counts(service: Any) -> tuple[int, int, int]:
    """(users, sessions, sum of generations): what an attack must not change."""
    async with service.db.read() as db:
        users = (await db.execute(select(func.count()).select_from(UserRow))).scalar_one()
        sessions = (await db.execute(select(func.count()).select_from(SessionRow))).scalar_one()
        generations = (
            await db.execute(select(func.coalesce(func.sum(SessionRow.generation), 0)))
        ).scalar_one()
    return int(users), int(sessions), int(generations)
