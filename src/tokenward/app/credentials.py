"""Checking a password under the account's failure limits, shared by sign-in and changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from tokenward.app.context import Context
from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.users import Account, account_key
from tokenward.exceptions import AuthenticationError
from tokenward.infra.ratelimit import Limit
from tokenward.storage.port import retrying

if TYPE_CHECKING:
    from tokenward.app.sessions import Principal

__all__ = ["Verified", "check_current_password", "check_password", "record_failure"]


@dataclass(frozen=True, slots=True)
class Verified:
    """A password check that passed: the hash it passed against, and its upgrade if due."""

    password_hash: str
    new_hash: str | None


async def check_password(
    ctx: Context, account: str, ip: str, password: str, row: Account | None
) -> Verified | None:
    """Verify ``password`` under the account's failure limits; None unless it may sign in.

    The failure is counted *before* the hash runs and given back on success, so a burst
    of concurrent guesses cannot all pass a check that none of them was counted in yet.
    An unknown account still costs one verification (no timing oracle).
    """
    await ctx.limits.reserve(
        (Limit.LOGIN_FAILURES_ACCOUNT_IP, (account, ip)),
        (Limit.LOGIN_FAILURES_ACCOUNT, (account,)),
    )
    password_hash = row.password_hash if row else None
    ok, new_hash = await ctx.hashed(ctx.hasher.verify, password, password_hash)
    if row is None or password_hash is None or not ok or row.disabled_at is not None:
        return None
    await ctx.limits.clear(Limit.LOGIN_FAILURES_ACCOUNT_IP, account, ip)
    await ctx.limits.refund(Limit.LOGIN_FAILURES_ACCOUNT, account)
    return Verified(password_hash=password_hash, new_hash=new_hash)


async def record_failure(
    ctx: Context,
    client: ClientInfo,
    now: datetime,
    user_id: str | None,
    *,
    reason: str,
    session_id: str | None = None,
) -> None:
    """Record a failed password check (``login.failed``, ``detail.reason``) on its own."""
    event = NewEvent(
        EventType.LOGIN_FAILED,
        now,
        client,
        user_id=user_id,
        session_id=session_id,
        detail={"reason": reason},
    )

    async def write() -> None:
        async with ctx.store.write() as tx:
            tx.add_event(event)

    await retrying(write)


async def check_current_password(
    ctx: Context, principal: Principal, password: str, client: ClientInfo
) -> tuple[Account, Verified]:
    """The signed-in user's current password, before a change that needs it (the password,
    the address, deleting the account). Under the account's failure limits: a stolen access
    token can neither guess it nor get past a lockout. AuthenticationError, recorded as a
    failed check, when it is wrong."""
    async with ctx.store.read() as tx:
        row = await tx.account(principal.user.id)
    ip = ctx.limits.client(client.ip)
    verified = await check_password(ctx, account_key(principal.user.email), ip, password, row)
    if verified is None or row is None:
        await record_failure(
            ctx,
            client,
            ctx.now(),
            principal.user.id,
            reason="bad_current_password",
            session_id=principal.session_id,
        )
        raise AuthenticationError("the current password is incorrect")
    return row, verified
