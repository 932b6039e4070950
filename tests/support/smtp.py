"""A real SMTP server on loopback (aiosmtpd) that keeps every mail it accepts.

It runs in a thread of its own (aiosmtpd's ``Controller``), so both in-process tests and real
``tokenward serve`` processes deliver to it. Failure injection: ``fail_next(n, code)`` answers
the next ``n`` DATA commands with ``code`` (451: try again later; 550: refused), and ``stop()``
/ ``start()`` take the server away and bring it back on the same port.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["Mail", "SmtpServer", "mail_settings_for"]

_LINK = re.compile(r"https?://\S+#token=([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Mail:
    """One accepted message, parsed."""

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage
    raw: bytes

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        return "" if body is None else str(body.get_content())

    @property
    def html(self) -> str:
        body = self.message.get_body(("html",))
        return "" if body is None else str(body.get_content())

    @property
    def link(self) -> str:
        """The one link with a token in its fragment."""
        found = re.search(r"https?://\S+#token=[A-Za-z0-9_-]+", self.text)
        assert found is not None, self.text
        return found.group(0)

    @property
    def token(self) -> str:
        found = _LINK.search(self.text)
        assert found is not None, self.text
        return found.group(1)


@dataclass
class _Handler:
    mails: list[Mail] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.attempts += 1
            if self.failures:
                code = self.failures.pop(0)
                return f"{code} {'try again later' if code < 500 else 'refused'}"
            raw = bytes(envelope.original_content or envelope.content)
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self.mails.append(Mail(envelope.mail_from, tuple(envelope.rcpt_tos), parsed, raw))
            self.arrived.notify_all()
        return "250 OK"


class SmtpServer:
    """``start()`` it, point ``TOKENWARD_SMTP_URL`` at :attr:`url`, read :attr:`mails`."""

    def __init__(self) -> None:
        self.handler = _Handler()
        self.port = 0
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def start(self) -> None:
        """Listen (again, on the same port once it had one)."""
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def fail_next(self, count: int, code: int = 451) -> None:
        with self.handler.lock:
            self.handler.failures.extend([code] * count)

    @property
    def mails(self) -> list[Mail]:
        with self.handler.lock:
            return list(self.handler.mails)

    @property
    def attempts(self) -> int:
        with self.handler.lock:
            return self.handler.attempts

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.mails.clear()

    def wait_for(
        self, count: int = 1, *, to: str | None = None, timeout: float = 15.0
    ) -> list[Mail]:
        """Block until ``count`` mails (to ``to``, if given) have arrived; return them."""
        deadline = time.monotonic() + timeout
        with self.handler.arrived:
            while True:
                found = [m for m in self.handler.mails if to is None or to in m.recipients]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} mails to {to}, got {len(found)}")
                self.handler.arrived.wait(left)

    async def arrived(
        self,
        count: int = 1,
        *,
        to: str | None = None,
        timeout: float = 15.0,  # noqa: ASYNC109 - polls, never blocks
    ) -> list[Mail]:
        """:meth:`wait_for` without blocking the event loop (in-process tests, whose outbox
        worker runs on the same loop)."""
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.mails if to is None or to in m.recipients]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} mails to {to}, got {len(found)}")
            await asyncio.sleep(0.02)

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mail_settings_for(smtp: SmtpServer, **settings: object) -> dict[str, object]:
    """Settings that send every mail to ``smtp`` (``settings`` names at least ``app_url``,
    and may replace any of these). Rate limits off unless a test is about them: the mail
    limits count in real time, and most tests mail one address more than once a minute."""
    return {
        "email_delivery": "smtp",
        "smtp_url": smtp.url,
        "email_from": "Example <no-reply@example.com>",
        "rate_limits": False,
        **settings,
    }
