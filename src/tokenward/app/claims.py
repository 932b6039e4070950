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
import threading
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

HOOK_THREADS = 8
"""Plain-function hook calls running at once per process (each in a thread of its own)."""


class _Busy(Exception):  # noqa: N818 - a signal, answered as ClaimsProblem.BUSY
    pass


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
        self._slots = threading.BoundedSemaphore(HOOK_THREADS)

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
        except _Busy:
            await self.failed(ClaimsProblem.BUSY, account.id, session_id, grant, client)
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
        answer = await self._in_thread(self.hook, request)
        return await answer if inspect.isawaitable(answer) else answer

    def _in_thread(self, hook: ClaimsHook, request: ClaimsRequest) -> asyncio.Future[object]:
        """Run a plain-function hook in a daemon thread of its own, HOOK_THREADS at most.

        A plain function may block (a database of its own), so it runs off the event loop
        and the timeout can answer for it. Not in the default executor: hung hooks would hold
        the threads that password hashing needs, and a shutdown would wait for them. When
        every slot is held by a hook still running, the request fails at once (``busy``)."""
        if not self._slots.acquire(blocking=False):
            raise _Busy
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()

        def settle(outcome: object, error: BaseException | None) -> None:
            if future.done():
                return  # timed out and abandoned
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(outcome)

        def run() -> None:
            try:
                outcome = hook(request)
            except BaseException as error:  # delivered to the awaiting request
                loop.call_soon_threadsafe(settle, None, error)
            else:
                loop.call_soon_threadsafe(settle, outcome, None)
            finally:
                self._slots.release()

        threading.Thread(target=run, name="tokenward-claims-hook", daemon=True).start()
        return future

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
