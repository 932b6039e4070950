"""The mail outbox: queued with the change that needs the mail, sent by a worker later.

``queue`` writes a mail in the caller's unit of work, so the mail exists exactly when the
change does. The recipient and the template's values (links) are sealed under the server
secret. Each instance runs :meth:`Outbox.run`: it claims due mails (recording the attempt and
the Message-ID before sending, with a lease), sends each, and marks it sent (the sealed payload
wiped) or due again after a backoff, or given up after ``TOKENWARD_EMAIL_MAX_ATTEMPTS`` or on a
permanent refusal, with an ``email.delivery_failed`` event. A crash mid-send leaves the lease
to run out, and the mail is sent again with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from tokenward.app.context import Context
from tokenward.core.events import EventType, NewEvent
from tokenward.infra import metrics
from tokenward.infra.mail import Composer, Delivery, DeliveryError, MailTemplate
from tokenward.infra.metrics import MailResult
from tokenward.storage.port import MailState, OutgoingMail, QueuedMail, UnitOfWork, retrying

__all__ = ["LEASE", "Outbox", "Resolver", "backoff"]

Resolver = Callable[
    [UnitOfWork, str, dict[str, Any], datetime],
    Awaitable[tuple[str | None, dict[str, Any]] | None],
]
"""Decides a queued job: (unit of work, address, the job's values, now) to (user id, the
template's values), or None when nothing is to be sent."""

logger = logging.getLogger("tokenward.outbox")

LEASE = timedelta(minutes=1)
"""How long a claimed mail is left to its sender before another may take it (a crash); a
send is cut off well before (``SEND_TIMEOUT``), so a slow relay never outlives its lease."""
SEND_TIMEOUT = 45.0
"""Seconds one mail's whole SMTP conversation may take (each command has its own timeout)."""
MAX_WAIT = timedelta(hours=6)
"""The longest wait between two attempts, however many came before."""
POLL = 1.0
"""Seconds between looks at the outbox when nothing woke the worker."""
BATCH = 1
"""Mails claimed per transaction: one, so that each mail's lease covers only its own send."""
ROUND = 10
"""Mails tried per round at most: the worker looks at its stop signal between rounds."""
PRIVATE_DELIVERY = frozenset({MailTemplate.EMAIL_CHANGE_CONFIRM})
"""Mails to an address that is not the account's own: their delivery events are recorded
under no user (``detail.for_user``), so that the requester's event feed cannot tell whether
the address was free (a taken one gets no mail)."""


def backoff(attempts: int, first: timedelta) -> timedelta:
    """The wait after ``attempts`` failed attempts: ``first``, then four times longer each
    time (30 s, 2 min, 8 min, 32 min with the default ``TOKENWARD_EMAIL_RETRY_BACKOFF``)."""
    return min(first * int(4 ** min(max(0, attempts - 1), 20)), MAX_WAIT)


def _delivery_event(kind: EventType, mail: QueuedMail, now: datetime, **more: Any) -> NewEvent:
    """``email.sent`` or ``email.delivery_failed``; under no user for a private delivery."""
    detail: dict[str, Any] = {"template": mail.template, "attempts": mail.attempts, **more}
    if mail.template in PRIVATE_DELIVERY:
        detail["for_user"] = mail.user_id
        return NewEvent(kind, now, detail=detail)
    return NewEvent(kind, now, user_id=mail.user_id, detail=detail)


class Outbox:
    """Queue mails with a change; deliver them in the background."""

    def __init__(
        self, ctx: Context, *, delivery: Delivery | None, composer: Composer | None
    ) -> None:
        self.ctx = ctx
        self.delivery = delivery
        self.composer = composer
        self._seal = Fernet(ctx.outbox_key)
        self._wake = asyncio.Event()
        self._resolvers: dict[MailTemplate, Resolver] = {}

    def resolve_with(self, template: MailTemplate, resolver: Resolver) -> None:
        """Who decides a queued job of ``template`` (see :data:`Resolver`): it writes what the
        mail needs (a link) or records why nothing is sent."""
        self._resolvers[template] = resolver

    @property
    def enabled(self) -> bool:
        """False with ``TOKENWARD_EMAIL_DELIVERY=none``: nothing is queued."""
        return self.delivery is not None

    def queue(
        self,
        tx: UnitOfWork,
        template: MailTemplate,
        *,
        to: str,
        now: datetime,
        user_id: str | None,
        context: dict[str, Any] | None = None,
        job: bool = False,
    ) -> None:
        """Add a mail to ``tx`` (nothing when mail is off).

        ``job``: the mail is not decided yet. The worker asks the template's resolver (see
        :meth:`resolve_with`), off the request path, whether and what to send: so a request
        that must not tell whether an account exists writes the same row whatever the
        address."""
        if not self.enabled:
            return
        body = {"to": to, "context": context or {}, "job": job}
        sealed = self._seal.encrypt(json.dumps(body).encode())
        tx.add_mail(
            OutgoingMail(
                template=template.value,
                user_id=user_id,
                payload=sealed.decode(),
                created_at=now,
                next_attempt_at=now,
            )
        )

    def wake(self) -> None:
        """Look at the outbox now (a request just queued a mail), not at the next poll."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver due mails until ``stopping`` is set; a failed round is logged, not fatal.

        Shutdown sets the event rather than cancelling the task: a mail being handed to SMTP
        is finished and marked, not left to be sent again after its lease."""
        while not stopping.is_set():
            try:
                tried = await self.deliver_due()
            except Exception as error:  # the database away, say: the next round tries again
                logger.warning("outbox round failed: %s", type(error).__name__)
                tried = 0
            if tried:
                continue  # there may be more
            self._wake.clear()
            woken = asyncio.create_task(self._wake.wait())
            stopped = asyncio.create_task(stopping.wait())
            await asyncio.wait({woken, stopped}, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
            for task in (woken, stopped):
                task.cancel()

    async def deliver_due(self) -> int:
        """Claim the due mails and try each once; return how many were tried."""
        if self.delivery is None or self.composer is None:
            return 0
        now = self.ctx.now()
        async with self.ctx.store.read() as tx:
            if (observed := metrics.current()).enabled:
                pending, oldest = await tx.outbox_backlog()
                age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
                observed.outbox(pending, age)
            if not await tx.mail_due(now):
                return 0  # the common case: a read, no write lock taken every second

        async def claim() -> list[QueuedMail]:
            async with self.ctx.store.write() as tx:
                return await tx.claim_mail(
                    now, lease_until=now + LEASE, new_message_id=self._message_id, limit=BATCH
                )

        tried = 0
        while tried < ROUND and (claimed := await retrying(claim)):
            for mail in claimed:
                await self._deliver(mail)
            tried += len(claimed)
        return tried

    def _message_id(self) -> str:
        domain = self.composer.sender.rsplit("@", 1)[-1].strip(" >") if self.composer else ""
        return f"<{secrets.token_hex(16)}@{domain or 'tokenward'}>"

    async def _deliver(self, mail: QueuedMail) -> None:
        """One attempt at one mail. Whatever goes wrong is this mail's alone: it is tried
        again later, or given up after ``TOKENWARD_EMAIL_MAX_ATTEMPTS``; never the batch's."""
        assert self.delivery is not None and self.composer is not None  # noqa: S101
        now = self.ctx.now()
        try:
            payload = json.loads(self._seal.decrypt((mail.payload or "").encode()))
        except (InvalidToken, ValueError):  # sealed under another secret: no attempt helps
            await self._give_up(mail, now, "unreadable payload")
            return
        try:
            template = MailTemplate(mail.template)
            if payload.get("job"):
                decided = await self._resolve(mail, template, payload, now)
                if decided is None:
                    return  # nothing to send (no such account, say): recorded, row gone
                payload, user_id = decided
                mail = replace(mail, user_id=user_id)  # the events below name the user
            message = self.composer.compose(
                template,
                to=payload["to"],
                context=payload["context"],
                message_id=mail.message_id,
                now=now,
            )
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.delivery.send(message)
        except DeliveryError as error:
            await self._failed(mail, now, error.reason, error.temporary, counted=error.reached)
            return
        except TimeoutError:
            await self._failed(mail, now, "send timed out", temporary=True)
            return
        except Exception as error:
            logger.warning("mail %s attempt failed: %s", mail.id, type(error).__name__)
            await self._failed(mail, now, f"error: {type(error).__name__}", temporary=True)
            return
        await self._sent(mail, now)

    async def _failed(
        self,
        mail: QueuedMail,
        now: datetime,
        reason: str,
        temporary: bool,
        *,
        counted: bool = True,
    ) -> None:
        """A failed attempt: later again, or given up. ``counted=False`` (the relay was not
        reached at all: an outage) leaves the attempt uncounted, so an outage of any length
        gives nothing up; the mail waits for the relay at the first backoff."""
        if temporary and (not counted or mail.attempts < self.ctx.settings.email_max_attempts):
            await self._retry_later(mail, now, reason, counted=counted)
        else:
            await self._give_up(mail, now, reason)

    async def _resolve(
        self, mail: QueuedMail, template: MailTemplate, job: dict[str, Any], now: datetime
    ) -> tuple[dict[str, Any], str | None] | None:
        """Decide a job once: the resolved payload (sealed in its row, so that a retry sends
        the same link) and its user, or None, with the row deleted."""
        resolver = self._resolvers.get(template)
        if resolver is None:  # a wiring mistake, not a bad mail: the lease runs out, it is retried
            raise RuntimeError(f"no resolver for queued {template.value} jobs")

        async def write() -> tuple[dict[str, Any], str | None] | None:
            async with self.ctx.store.write() as tx:
                decided = await resolver(tx, job["to"], job["context"], now)
                if decided is None:
                    await tx.delete_mail(mail.id)
                    return None
                user_id, context = decided
                resolved = {"to": job["to"], "context": context, "job": False}
                sealed = self._seal.encrypt(json.dumps(resolved).encode()).decode()
                await tx.resolve_mail(mail.id, sealed, user_id)
                return resolved, user_id

        return await retrying(write)

    async def _sent(self, mail: QueuedMail, now: datetime) -> None:
        async def write() -> None:
            async with self.ctx.store.write() as tx:
                await tx.mail_sent(mail.id, now)
                tx.add_event(_delivery_event(EventType.EMAIL_SENT, mail, now))

        await retrying(write)
        metrics.current().mail(mail.template, MailResult.SENT)

    async def _retry_later(
        self, mail: QueuedMail, now: datetime, reason: str, *, counted: bool = True
    ) -> None:
        logger.info("mail %s attempt %d failed (%s): retried later", mail.id, mail.attempts, reason)
        attempts = mail.attempts if counted else mail.attempts - 1

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                wait = backoff(max(1, attempts), self.ctx.settings.email_retry_backoff)
                await tx.mail_retry(mail.id, now + wait, reason, uncount=not counted)

        await retrying(write)
        metrics.current().mail(mail.template, MailResult.RETRIED)

    async def _give_up(self, mail: QueuedMail, now: datetime, reason: str) -> None:
        logger.warning("mail %s given up after %d attempts (%s)", mail.id, mail.attempts, reason)

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                await tx.mail_failed(mail.id, now, reason)
                tx.add_event(
                    _delivery_event(EventType.EMAIL_DELIVERY_FAILED, mail, now, reason=reason)
                )

        await retrying(write)
        metrics.current().mail(mail.template, MailResult.FAILED)

    # -- operators -------------------------------------------------------------------------

    async def list(self, limit: int = 50) -> list[MailState]:
        async with self.ctx.store.read() as tx:
            return await tx.mails(limit)

    async def retry(self, mail_id: int) -> bool:
        """Queue a given-up mail again (while its sealed payload is kept)."""
        now = self.ctx.now()

        async def write() -> bool:
            async with self.ctx.store.write() as tx:
                return await tx.requeue_mail(mail_id, now)

        requeued = await retrying(write)
        if requeued:
            self.wake()
        return requeued
