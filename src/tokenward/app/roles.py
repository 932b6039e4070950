"""Roles: what operators and admin clients define and grant, and what tokens then carry.

A change is seen at once by tokenward's own endpoints (``/auth/me`` reads the grants), by the
next access token a refresh issues, and by resource servers within the access token lifetime,
or at once where the operator ends the user's sessions with the change (``end_sessions``:
the usual revocation path, so the revocation feed carries it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from tokenward.app.context import Context
from tokenward.core.events import Actor, EventType, NewEvent
from tokenward.core.roles import Grants, Role, check_role_name, permissions_of
from tokenward.core.sessions import EndReason
from tokenward.exceptions import UnknownRoleError, UnknownUserError
from tokenward.storage.port import UnitOfWork, retrying

__all__ = ["Roles"]


async def end_for_roles(tx: UnitOfWork, user_id: str, now: datetime) -> int:
    """End the user's sessions because their roles changed; how many. Last in a transaction
    (the revocation log's lock is held from here to the commit)."""
    return len(await tx.end_sessions(user_id, now, EndReason.ROLES_CHANGED))


class Roles:
    """Define roles, grant and revoke them, and read a user's grants."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def list(self) -> list[Role]:
        async with self.ctx.store.read() as tx:
            return await tx.roles()

    async def grants(self, user_id: str) -> Grants:
        async with self.ctx.store.read() as tx:
            return await tx.grants(user_id)

    async def put(self, name: str, permissions: Iterable[str], actor: Actor) -> tuple[Role, bool]:
        """Create the role, or replace its permissions; (the role, whether it was created)."""
        check_role_name(name)
        granted = permissions_of(permissions)
        Grants((name,), granted).check_size()  # a holder of it alone must fit
        now = self.ctx.now()
        defaults = self.ctx.settings.default_roles

        async def write() -> tuple[Role, bool]:
            async with self.ctx.store.write() as tx:
                created = await tx.put_role(Role(name, granted, now))
                for held in await tx.holders_grants(name):
                    held.check_size()  # every holder's next token must still fit
                if name in defaults:  # and a new user's, who gets every default role
                    roles = [role for role in await tx.roles() if role.name in defaults]
                    Grants(
                        tuple(role.name for role in roles),
                        tuple(sorted({p for role in roles for p in role.permissions})),
                    ).check_size()
                role = await tx.role(name)
                assert role is not None  # noqa: S101 - written just above
                kind = EventType.ROLE_CREATED if created else EventType.ROLE_UPDATED
                detail = actor.detail(role=name, permissions=list(granted))
                tx.add_event(NewEvent(kind, now, actor.client, detail=detail))
            return role, created

        return await retrying(write)

    async def delete(self, name: str, actor: Actor, *, end_sessions: bool = False) -> bool:
        """Delete the role and every grant of it; False if there was none. With
        ``end_sessions``, the sessions of everyone who held it end too, in the same commit."""
        now = self.ctx.now()

        async def write() -> bool:
            async with self.ctx.store.write() as tx:
                if await tx.role(name) is None:
                    return False
                holders = await tx.delete_role(name)
                detail = actor.detail(role=name, holders=len(holders))
                if end_sessions:  # last: the revocation log's lock is held to the commit
                    ended = await tx.end_sessions_of(holders, now, EndReason.ROLES_CHANGED)
                    detail["sessions_ended"] = len(ended)
                tx.add_event(NewEvent(EventType.ROLE_DELETED, now, actor.client, detail=detail))
            return True

        return await retrying(write)

    async def grant(
        self, user_id: str, name: str, actor: Actor, *, end_sessions: bool = False
    ) -> bool:
        """Give the user the role; False if they held it already. UnknownUserError,
        UnknownRoleError for what does not exist."""
        return await self._change(user_id, name, actor, grant=True, end_sessions=end_sessions)

    async def revoke(
        self, user_id: str, name: str, actor: Actor, *, end_sessions: bool = False
    ) -> None:
        """Take the role from the user; UnknownRoleError if they did not hold it."""
        if not await self._change(user_id, name, actor, grant=False, end_sessions=end_sessions):
            raise UnknownRoleError(f"the user does not hold the role {name!r}")

    async def _change(
        self, user_id: str, name: str, actor: Actor, *, grant: bool, end_sessions: bool
    ) -> bool:
        check_role_name(name)
        now = self.ctx.now()

        async def write() -> bool:
            async with self.ctx.store.write() as tx:
                if await tx.account(user_id, lock=True) is None:
                    raise UnknownUserError("no such user")
                if await tx.role(name) is None:
                    raise UnknownRoleError(f"no role {name!r}")
                if grant:
                    changed = await tx.grant_role(user_id, name, now)
                    (await tx.grants(user_id)).check_size()  # the next token must fit
                else:
                    changed = await tx.revoke_role(user_id, name)
                if not changed and not (grant and end_sessions):
                    return False  # held already (or not held): nothing to do
                detail = actor.detail(role=name)
                if not changed:
                    detail["already_held"] = True  # the sessions end all the same, as asked
                if end_sessions:
                    detail["sessions_ended"] = await end_for_roles(tx, user_id, now)
                kind = EventType.ROLE_GRANTED if grant else EventType.ROLE_REVOKED
                tx.add_event(NewEvent(kind, now, actor.client, user_id, detail=detail))
            return changed

        return await retrying(write)
