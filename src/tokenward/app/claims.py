"""The custom claims hook: a deployment's function, asked for extra claims at sign-in and at
every refresh (``TOKENWARD_CLAIMS_HOOK=myapp.auth:claims``, or a function passed in).

It is called *before* anything is written: a hook that raises, times out or answers what
cannot go in a token fails the request with 503 and changes nothing (never a token without the
claims the deployment relies on), and the failure is a ``claims.hook_failed`` event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import logging
from typing import Any, NoReturn

from tokenward.app.context import Context
from tokenward.core.claims import (
    ClaimsHook,
    ClaimsProblem,
    ClaimsRequest,
    CustomClaimsError,
    TokenGrant,
    custom_claims,
)
from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.roles import Grants
from tokenward.core.users import Account
from tokenward.exceptions import ClaimsUnavailableError, ConfigError
from tokenward.storage.port import retrying

__all__ = ["ClaimsHook", "CustomClaims", "load_hook"]

_log = logging.getLogger("tokenward")


def load_hook(path: str) -> ClaimsHook:
    """The callable ``module.path:name`` names; ConfigError if it cannot be imported."""
    module_name, _, attribute = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except Exception as error:
        raise ConfigError(
            f"TOKENWARD_CLAIMS_HOOK: cannot load {path} ({type(error).__name__})"
        ) from None
    if not callable(found):
        raise ConfigError(f"TOKENWARD_CLAIMS_HOOK: {path} is not callable")
    hook: ClaimsHook = found
    return hook


class CustomClaims:
    """Asks the hook (if any) and vets its answer (core.claims)."""

    def __init__(self, ctx: Context, hook: ClaimsHook | None) -> None:
        self.ctx = ctx
        self.hook = hook
        self._is_async = hook is not None and inspect.iscoroutinefunction(hook)

    @property
    def enabled(self) -> bool:
        return self.hook is not None

    async def for_token(
        self,
        account: Account,
        session_id: str,
        grants: Grants,
        grant: TokenGrant,
        client: ClientInfo,
    ) -> dict[str, Any] | None:
        """The hook's extra claims for this token; None without a hook.

        Raises ClaimsUnavailableError (after recording ``claims.hook_failed``) when the hook
        raises, outlasts ``TOKENWARD_CLAIMS_HOOK_TIMEOUT`` or answers something unusable."""
        if self.hook is None:
            return None
        request = ClaimsRequest(
            # The user's own metadata is theirs to write: never an input to authorization.
            user=dataclasses.replace(account.user, user_metadata={}),
            session_id=session_id,
            grants=grants,
            grant=grant,
            app_metadata=account.app_metadata,
        )
        timeout = self.ctx.settings.claims_hook_timeout.total_seconds()
        try:
            answer = await asyncio.wait_for(self._ask(request), timeout)
            extra, dropped = custom_claims(answer, max_bytes=self.ctx.settings.claims_max_bytes)
        except TimeoutError:
            await self.failed(ClaimsProblem.TIMED_OUT, account.id, session_id, grant, client)
        except CustomClaimsError as refused:
            await self.failed(refused.problem, account.id, session_id, grant, client)
        except Exception as error:
            _log.warning("claims hook raised %s", type(error).__name__)
            await self.failed(ClaimsProblem.RAISED, account.id, session_id, grant, client)
        if dropped:
            _log.warning("claims hook set reserved claims, ignored: %s", ", ".join(dropped))
        return extra

    async def _ask(self, request: ClaimsRequest) -> object:
        assert self.hook is not None  # noqa: S101 - for_token() checked
        if self._is_async:
            return await self.hook(request)  # type: ignore[misc]
        # A plain function may block (a database of its own): off the event loop, so the
        # timeout can still answer for it (the thread finishes on its own).
        answer = await asyncio.to_thread(self.hook, request)
        return await answer if inspect.isawaitable(answer) else answer

    async def failed(
        self,
        problem: ClaimsProblem,
        user_id: str,
        session_id: str,
        grant: TokenGrant,
        client: ClientInfo,
    ) -> NoReturn:
        """Record the failure and raise ClaimsUnavailableError."""
        event = NewEvent(
            EventType.CLAIMS_HOOK_FAILED,
            self.ctx.now(),
            client,
            user_id=user_id,
            session_id=session_id,
            detail={"reason": problem.value, "grant": grant.value},
        )

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                tx.add_event(event)

        await retrying(write)
        raise ClaimsUnavailableError(problem.value)
