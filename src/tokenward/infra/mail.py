"""Mail: composing a message from templates, and handing it to SMTP (or the log).

Templates are Jinja2, three files each (``<name>.subject.txt``, ``<name>.txt``,
``<name>.html``), built in and overridable file by file from ``TOKENWARD_EMAIL_TEMPLATES``.
HTML is autoescaped. A message is multipart text + HTML with ``Auto-Submitted:
auto-generated``; the Message-ID is chosen by the caller (the outbox records it before the
first attempt, so a mail sent again after a crash keeps it).
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import jinja2

__all__ = [
    "Composer",
    "Delivery",
    "DeliveryError",
    "LogDelivery",
    "MailTemplate",
    "SentMail",
    "SmtpDelivery",
    "SmtpTarget",
]

logger = logging.getLogger("tokenward.mail")


class MailTemplate(StrEnum):
    """The mails tokenward sends. Values are stored in the outbox: never rename."""

    VERIFY_EMAIL = "verify_email"
    SIGNUP_ATTEMPT = "signup_attempt"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a template name
    PASSWORD_RESET_DONE = "password_reset_done"  # noqa: S105 - a template name
    EMAIL_CHANGE_CONFIRM = "email_change_confirm"
    EMAIL_CHANGE_NOTICE = "email_change_notice"
    EMAIL_CHANGED = "email_changed"
    ACCOUNT_DELETED = "account_deleted"
    INVITATION = "invitation"
    """An admin created the account without a password: a reset link to choose one."""
    MFA_CHANGED = "mfa_changed"
    """A second factor was added or removed, recovery codes replaced, or one used."""


class DeliveryError(Exception):
    """A mail was not accepted. ``temporary``: try again later (4xx, timeouts, no route);
    ``reached``: the relay answered at all (False: refused or timed-out connection, an
    outage, which does not count as an attempt at this mail)."""

    def __init__(self, reason: str, *, temporary: bool, reached: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary
        self.reached = reached


class Composer:
    """Renders a template into a message."""

    def __init__(self, sender: str, override: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if override is not None:
            loaders.append(jinja2.FileSystemLoader(str(override)))
        loaders.append(jinja2.PackageLoader("tokenward.infra", "mail_templates"))
        self.sender = sender
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, template: MailTemplate, context: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) of ``template`` with ``context``; ValueError for a template
        that is missing or does not render (an operator's override with a typo, say)."""
        try:
            subject = self._env.get_template(f"{template.value}.subject.txt").render(context)
            text = self._env.get_template(f"{template.value}.txt").render(context)
            html = self._env.get_template(f"{template.value}.html").render(context)
        except jinja2.TemplateError as error:
            raise ValueError(
                f"mail template {template.value}: {error.__class__.__name__}"
            ) from None
        return " ".join(subject.split()), text, html

    def compose(
        self,
        template: MailTemplate,
        *,
        to: str,
        context: dict[str, Any],
        message_id: str,
        now: datetime,
    ) -> EmailMessage:
        subject, text, html = self.render(template, context)
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(now.astimezone(UTC))
        message["Message-ID"] = message_id
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message


class Delivery(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand the message over; raise :class:`DeliveryError` if it was not accepted."""


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to reach the SMTP server, from ``TOKENWARD_SMTP_URL``."""

    host: str
    port: int
    tls: str  # "starttls" (required), "implicit" or "none"
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(
        cls, url: str, *, username: str | None = None, password: str | None = None
    ) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("expected smtp://host[:port] or smtps://host[:port]")
        query = parse_qs(parts.query)
        tls = "implicit" if parts.scheme == "smtps" else "starttls"
        if query.get("tls") == ["none"]:
            if parts.scheme == "smtps":
                raise ValueError("smtps:// is TLS from the start: drop ?tls=none")
            tls = "none"
        elif query:
            raise ValueError("the only query setting is ?tls=none")
        port = parts.port or (465 if tls == "implicit" else 587)
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=username or (unquote(parts.username) if parts.username else None),
            password=password or (unquote(parts.password) if parts.password else None),
        )


class SmtpDelivery:
    """One connection per mail (tokenward sends few): STARTTLS required unless told otherwise."""

    def __init__(self, target: SmtpTarget, *, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._tls = ssl.create_default_context()

    async def send(self, message: EmailMessage) -> None:
        target = self.target
        try:
            await aiosmtplib.send(
                message,
                hostname=target.host,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.tls == "implicit",
                start_tls=target.tls == "starttls",
                tls_context=self._tls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            temporary = all(400 <= code < 500 for code in codes)
            raise DeliveryError(f"recipient refused ({codes})", temporary=temporary) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError, OSError) as error:
            name = error.__class__.__name__
            raise DeliveryError(name, temporary=True, reached=False) from None
        except aiosmtplib.SMTPResponseException as error:
            temporary = 400 <= error.code < 500
            raise DeliveryError(f"SMTP {error.code}", temporary=temporary) from None
        except (aiosmtplib.SMTPException, TimeoutError) as error:
            raise DeliveryError(error.__class__.__name__, temporary=True) from None


@dataclass(frozen=True)
class SentMail:
    """A mail as the development mailbox shows it."""

    to: str
    subject: str
    text: str
    sent_at: datetime


class LogDelivery:
    """Development only: the mail, link included, is kept in a small mailbox (served at
    ``GET /demo/mailbox``); the log says one was kept, and its subject."""

    def __init__(self, keep: int = 50) -> None:
        self.mailbox: deque[SentMail] = deque(maxlen=keep)

    async def send(self, message: EmailMessage) -> None:
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        self.mailbox.appendleft(
            SentMail(
                to=str(message["To"]),
                subject=str(message["Subject"]),
                text=text,
                sent_at=parsedate_to_datetime(str(message["Date"])),
            )
        )
        # The log line names neither the recipient nor the link (no address, no token in any
        # log line): the mail itself is read from the mailbox.
        logger.warning(
            "development mail (TOKENWARD_EMAIL_DELIVERY=log) kept, not sent: %r; read it at "
            "GET /demo/mailbox",
            str(message["Subject"]),
        )
