"""Claims hooks for tests: one whose answer, speed and kind a test scripts, and a module on disk
for the ``TOKENWARD_CLAIMS_HOOK=module:function`` path."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt

from tokenward.core.claims import ClaimsRequest

__all__ = ["BLOCKED_SECONDS", "ScriptedHook", "claims_of", "write_hook_module"]

BLOCKED_SECONDS = 30.0
"""How long a blocked hook waits at most: far past any timeout a test sets."""

_modules = itertools.count()


def claims_of(access_token: str) -> dict[str, Any]:
    """The access token's payload (the server's signature is other tests' business)."""
    payload: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return payload


class ScriptedHook:
    """A claims hook that records what it is asked and answers what the test says.

    ``kind`` is ``"sync"`` (a plain function, which tokenward runs in a thread) or ``"async"``
    (a coroutine function, awaited on the event loop). ``answer`` is a function of the request
    (it may raise); ``block()`` makes the hook hang until ``release()`` (a blocking wait for the
    plain function, an ``asyncio.sleep`` for the coroutine function)."""

    def __init__(self, kind: str = "sync") -> None:
        assert kind in {"sync", "async"}
        self.kind = kind
        self.requests: list[ClaimsRequest] = []
        self.answer: Callable[[ClaimsRequest], object] = lambda _request: {}
        self._blocked = False
        self._released = threading.Event()

    @property
    def function(self) -> Callable[[ClaimsRequest], Any]:
        """What to pass as ``claims_hook``."""
        return self.plain if self.kind == "sync" else self.coroutine

    def answers(self, value: object) -> None:
        """Answer ``value`` (the same object) from now on."""
        self.answer = lambda _request: value

    def raises(self, error: BaseException) -> None:
        def fail(_request: ClaimsRequest) -> object:
            raise error

        self.answer = fail

    def block(self) -> None:
        self._blocked = True
        self._released.clear()

    def release(self) -> None:
        """Stop blocking: a hung plain function returns at once, later calls do not hang."""
        self._blocked = False
        self._released.set()

    def plain(self, request: ClaimsRequest) -> object:
        self.requests.append(request)
        if self._blocked:
            self._released.wait(BLOCKED_SECONDS)
        return self.answer(request)

    async def coroutine(self, request: ClaimsRequest) -> object:
        self.requests.append(request)
        if self._blocked:
            await asyncio.sleep(BLOCKED_SECONDS)
        return self.answer(request)


def write_hook_module(directory: Path, source: str) -> str:
    """Write ``source`` as a new module in ``directory`` (put it on sys.path); its name.

    A fresh name each time, so that no module imported by an earlier test is reused."""
    suffix = re.sub(r"\W", "_", directory.name)
    name = f"tokenward_test_hook_{next(_modules)}_{suffix}"
    (directory / f"{name}.py").write_text(source)
    return name
