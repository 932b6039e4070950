"""The signed-in user's own profile data: ``user_metadata`` (core.metadata).

Edited by the user with a JSON Merge Patch (RFC 7396), capped in size, and never trusted for
authorization: it does not reach the claims hook, which sees ``app_metadata`` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tokenward.app.context import Context
from tokenward.app.sessions import Principal
from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.metadata import USER_METADATA_MAX_BYTES, checked_metadata, merge_patch
from tokenward.core.users import Account
from tokenward.exceptions import SessionEndedError
from tokenward.infra.ratelimit import Limit
from tokenward.storage.port import retrying

__all__ = ["Profiles"]


class Profiles:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def patch_user_metadata(
        self, principal: Principal, patch: Mapping[str, Any], client: ClientInfo
    ) -> Account:
        """Merge ``patch`` into the caller's user_metadata; the account as it is now.
        InvalidMetadataError when the result is not a JSON object within the cap."""
        await self.ctx.limits.hit(Limit.USER_ACTIONS, principal.user.id)
        checked_metadata(patch, max_bytes=USER_METADATA_MAX_BYTES * 4, what="the patch")
        now = self.ctx.now()

        async def write() -> Account:
            async with self.ctx.store.write() as tx:
                account = await tx.account(principal.user.id, lock=True)
                if account is None:
                    raise SessionEndedError("the account is gone")
                merged = checked_metadata(
                    merge_patch(account.user_metadata, patch),
                    max_bytes=USER_METADATA_MAX_BYTES,
                    what="user_metadata",
                )
                await tx.set_user_metadata(account.id, merged)
                tx.add_event(
                    NewEvent(
                        EventType.USER_METADATA_CHANGED,
                        now,
                        client,
                        user_id=account.id,
                        session_id=principal.session_id,
                    )
                )
            return dataclasses.replace(account, user_metadata=merged)

        return await retrying(write)
