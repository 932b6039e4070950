"""Prometheus metrics: what the process counts, and the listener that serves them.

One switch, ``TOKENWARD_METRICS``. Off (the default), :func:`current` is a :class:`Recorder`
that counts nothing, so the code that reports costs one method call. On, it is
:class:`Metrics`, which counts into prometheus_client's metrics on a registry of its own,
served on a listener of its own (``TOKENWARD_METRICS_LISTEN``), never on the app's port.

Labels are closed vocabularies only: route templates, methods, status codes and enum
values. Never a user, an email address, an IP, a session id or a raw path.

``tokenward serve --workers N`` runs the workers with prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, made empty by serve before the workers start): each worker
writes its values to files there, and the one listener, in serve's own process, adds them up.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenward import __version__
from tokenward.core.events import LOGIN_OUTCOMES, EventType, NewEvent, login_outcome
from tokenward.core.refresh import RefreshResult
from tokenward.core.sessions import EndReason

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter

    from tokenward.infra.config import Settings

__all__ = [
    "MULTIPROCESS_DIR",
    "DatabaseErrorKind",
    "MailResult",
    "Metrics",
    "MetricsListener",
    "Recorder",
    "current",
    "install",
    "multiprocess",
    "prepare_multiprocess",
    "running",
    "serve_metrics",
]

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's variable: set (by ``tokenward serve``), values are shared by files."""

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: the protected route answers in about a millisecond, a login in a quarter second."""
HASH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
"""The label of a value outside its vocabulary (an unknown method, a template this version
does not know): the vocabulary stays closed."""
UNMATCHED = "unmatched"
"""The route label of a request that reached no route (a 404, a static file, a body refused by
the transport defences): never its path."""


class DatabaseErrorKind(StrEnum):
    TIMEOUT = "timeout"
    """No connection in time (the pool, or the server not answering)."""
    CONFLICT = "conflict"
    """A transaction rolled back by a concurrent one (retried)."""
    UNAVAILABLE = "unavailable"
    """The database refused or dropped the connection."""


class MailResult(StrEnum):
    SENT = "sent"
    RETRIED = "retried"
    """An attempt failed; the mail is tried again later."""
    FAILED = "failed"
    """Given up: a permanent refusal, or the attempts ran out."""


def multiprocess() -> bool:
    """Whether this process shares its values through ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROCESS_DIR))


class Recorder:
    """What the code reports. This one keeps nothing: metrics are off."""

    enabled = False

    def request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """One answered request."""

    def flush(self) -> None:
        """Write what is tallied to the metrics."""

    def committed(self, events: Sequence[NewEvent], ended: Sequence[tuple[EndReason, int]]) -> None:
        """A transaction committed these security events and ended these sessions."""

    def refreshed(self, result: RefreshResult) -> None:
        """A presented refresh token, and how it was answered."""

    def rate_limited(self, limit: str) -> None:
        """A request refused by the rate limit ``limit`` (its name)."""

    @contextlib.contextmanager
    def hash_queued(self) -> Iterator[None]:
        """Around the wait for a password-hashing slot."""
        yield

    def hashed(self, waited: float, seconds: float) -> None:
        """A password hash: how long it queued, how long it took."""

    def outbox(self, pending: int, oldest_age: float) -> None:
        """The mail outbox: mails not yet sent, and the age of the oldest (0 when none)."""

    def mail(self, template: str, result: MailResult) -> None:
        """One delivery attempt of a mail of ``template``."""

    def signing_key(self, created_at: datetime) -> None:
        """The key that signs now, by when it was made."""

    def database_error(self, kind: DatabaseErrorKind) -> None:
        """A database error the code handled (a 503, or a conflict retried)."""


class Metrics(Recorder):
    """Counts into prometheus_client's metrics, on ``registry`` (a new one by default)."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Registered first, so read first: the requests tallied so far are written before the
        # registry reads the metrics below.
        r.register(_Flush(self))
        self._requests = Counter(
            "tokenward_http_requests",
            "Requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self._latency = Histogram(
            "tokenward_http_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self._events = Counter(
            "tokenward_security_events",
            "Security events recorded (committed), by type.",
            ["type"],
            registry=r,
        )
        self._logins = Counter(
            "tokenward_logins",
            "Sign-in steps by result and method (mfa: the second step of a sign-in).",
            ["result", "method"],
            registry=r,
        )
        self._refreshes = Counter(
            "tokenward_refreshes",
            "Refresh tokens presented, by how they were answered.",
            ["result"],
            registry=r,
        )
        self._ended = Counter(
            "tokenward_sessions_ended",
            "Sessions ended, by reason.",
            ["reason"],
            registry=r,
        )
        self._limited = Counter(
            "tokenward_rate_limit_hits",
            "Requests refused by a rate limit, by limit.",
            ["limit"],
            registry=r,
        )
        self._hash_seconds = Histogram(
            "tokenward_password_hash_duration_seconds",
            "Time one password hash took (argon2id, bcrypt).",
            buckets=HASH_BUCKETS,
            registry=r,
        )
        self._hash_wait = Histogram(
            "tokenward_password_hash_wait_seconds",
            "Time a password hash waited for a free hashing slot.",
            buckets=HASH_BUCKETS,
            registry=r,
        )
        self._hashes_waiting = Gauge(
            "tokenward_password_hashes_waiting",
            "Password hashes waiting for a free hashing slot now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._pending = Gauge(
            "tokenward_outbox_pending",
            "Mails in the outbox not yet sent.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._oldest = Gauge(
            "tokenward_outbox_oldest_pending_age_seconds",
            "Age of the oldest mail not yet sent (0 when none).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._mails = Counter(
            "tokenward_outbox_mails",
            "Mail delivery attempts by template and result.",
            ["template", "result"],
            registry=r,
        )
        self._key = Gauge(
            "tokenward_signing_key_created_timestamp_seconds",
            "When the key that signs now was made (its age: time() minus this).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._db_errors = Counter(
            "tokenward_database_errors",
            "Database errors handled, by kind.",
            ["kind"],
            registry=r,
        )
        build = Gauge(
            "tokenward_build_info",
            "The running version (always 1).",
            ["version", "python"],
            registry=r,
            multiprocess_mode="max",
        )
        build.labels(__version__, platform.python_version()).set(1)
        # Every series of a closed vocabulary exists from the start, at 0: a rate() or an
        # alert on a count that has not happened yet sees 0, not nothing.
        for kind in EventType:
            self._events.labels(kind.value)
        for result, method in LOGIN_OUTCOMES:
            self._logins.labels(result.value, method.value)
        for refresh in RefreshResult:
            self._refreshes.labels(refresh.value)
        for reason in EndReason:
            self._ended.labels(reason.value)
        for error in DatabaseErrorKind:
            self._db_errors.labels(error.value)
        self._limits: frozenset[str] = frozenset()
        self._templates: frozenset[str] = frozenset()
        self._tally: dict[tuple[str, str, int], _Tally] = {}
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()

    def declare_limits(self, limits: Iterable[str]) -> None:
        """The rate limits' names: each a series at 0; any other name is counted as ``other``."""
        self._limits = frozenset(limits)
        for limit in self._limits:
            self._limited.labels(limit)

    def declare_templates(self, templates: Iterable[str]) -> None:
        """The mail templates' names: each a series at 0; any other (a row written by a
        version that knew another) is counted as ``other``."""
        self._templates = frozenset(templates)
        for template in self._templates:
            for result in MailResult:
                self._mails.labels(template, result.value)

    def request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """Tallied here, written to the metrics by :meth:`flush`, as every count is: three
        writes to shared memory per request (count, duration sum, bucket), each with its
        lock, cost a tenth of the protected route's time; a tally, a dictionary update."""
        key = (route or UNMATCHED, method if method in METHODS else OTHER, status)
        bucket = bisect_left(REQUEST_BUCKETS, seconds)  # the first bound >= seconds (le)
        with self._lock:
            tally = self._tally.get(key)
            if tally is None:
                tally = self._tally[key] = _Tally([0] * (len(REQUEST_BUCKETS) + 1))
            tally.count += 1
            tally.seconds += seconds
            tally.buckets[bucket] += 1

    def _count(self, counter: Counter, *labels: str, amount: float = 1) -> None:
        """One more (``amount``) of ``counter`` with ``labels``, tallied until :meth:`flush`."""
        key = (counter, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def flush(self) -> None:
        """Write what was tallied since the last flush (every second while serving, and
        before every scrape of this process's own listener)."""
        with self._lock:
            tallies, self._tally = self._tally, {}
            counts, self._counts = self._counts, {}
        for (counter, labels), amount in counts.items():
            counter.labels(*labels).inc(amount)
        for (route, method, status), tally in tallies.items():
            self._requests.labels(route, method, str(status)).inc(tally.count)
            histogram = self._latency.labels(route)
            # prometheus_client's Histogram observes one value at a time; a batch goes to its
            # sum and buckets directly (the attributes observe() itself writes).
            histogram._sum.inc(tally.seconds)
            for index, count in enumerate(tally.buckets):
                if count:
                    histogram._buckets[index].inc(count)

    def committed(self, events: Sequence[NewEvent], ended: Sequence[tuple[EndReason, int]]) -> None:
        for event in events:
            self._count(self._events, event.kind.value)
            outcome = login_outcome(event)
            if outcome is not None:
                self._count(self._logins, outcome[0].value, outcome[1].value)
        for reason, count in ended:
            if count:
                self._count(self._ended, reason.value, amount=count)

    def refreshed(self, result: RefreshResult) -> None:
        self._count(self._refreshes, result.value)

    def rate_limited(self, limit: str) -> None:
        self._count(self._limited, limit if limit in self._limits else OTHER)

    @contextlib.contextmanager
    def hash_queued(self) -> Iterator[None]:
        self._hashes_waiting.inc()
        try:
            yield
        finally:
            self._hashes_waiting.dec()

    def hashed(self, waited: float, seconds: float) -> None:
        self._hash_wait.observe(waited)
        self._hash_seconds.observe(seconds)

    def outbox(self, pending: int, oldest_age: float) -> None:
        self._pending.set(pending)
        self._oldest.set(oldest_age)

    def mail(self, template: str, result: MailResult) -> None:
        self._count(self._mails, template if template in self._templates else OTHER, result.value)

    def signing_key(self, created_at: datetime) -> None:
        self._key.set(created_at.timestamp())

    def database_error(self, kind: DatabaseErrorKind) -> None:
        self._count(self._db_errors, kind.value)


@dataclass(slots=True)
class _Tally:
    """Requests of one route, method and status since the last flush."""

    buckets: list[int]
    count: int = 0
    seconds: float = 0.0


class _Flush:
    """A collector that yields nothing: registered first, it flushes the tallies before the
    registry reads the metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        self._metrics.flush()
        return iter(())


_OFF = Recorder()
_current: Recorder = _OFF


def current() -> Recorder:
    """This process's recorder: :class:`Metrics` when metrics are on, else one that keeps
    nothing."""
    return _current


def install(recorder: Recorder | None) -> None:
    """Make ``recorder`` this process's (None: metrics off)."""
    global _current
    _current = recorder if recorder is not None else _OFF


class MetricsListener:
    """The metrics' own HTTP listener (prometheus_client's), in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, host, registry=registry)
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(metrics: Metrics | None, host: str, port: int) -> MetricsListener:
    """Listen on ``host:port``: this process's ``metrics``, or (None) the sum over every
    process writing to ``PROMETHEUS_MULTIPROC_DIR``."""
    if metrics is not None:
        return MetricsListener(metrics.registry, host, port)
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    _live_workers_collector()(registry)
    return MetricsListener(registry, host, port)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process: alive
        return True
    return True


def _live_workers_collector() -> type:
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    class LiveWorkers(MultiProcessCollector):
        """The workers' sum, less the live gauges of workers gone without a clean shutdown
        (killed, restarted by serve): hashes they had waiting wait no more."""

        def collect(self) -> Any:
            for path in Path(self._path).glob("gauge_live*_*.db"):
                pid = path.stem.rsplit("_", 1)[-1]
                if pid.isdigit() and not _alive(int(pid)):
                    mark_process_dead(int(pid), self._path)  # type: ignore[no-untyped-call]
            return super().collect()  # type: ignore[no-untyped-call]

    return LiveWorkers


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[MetricsListener | None]:
    """Metrics on for the life of an app (``TOKENWARD_METRICS``): counted in this process, and
    served on ``TOKENWARD_METRICS_LISTEN`` unless ``tokenward serve`` serves them for all its
    workers (multiprocess mode). Yields the listener (None when metrics are off, or served by
    serve)."""
    if not settings.metrics:
        yield None
        return
    from tokenward.infra.mail import MailTemplate
    from tokenward.infra.ratelimit import Limit

    recorder = Metrics()
    recorder.declare_limits(limit.value for limit in Limit)
    recorder.declare_templates(template.value for template in MailTemplate)
    shared = multiprocess()
    listener = None if shared else serve_metrics(recorder, *settings.metrics_address)
    before = current()
    install(recorder)
    try:
        yield listener
    finally:
        recorder.flush()
        if current() is recorder:  # another app of this process may have installed its own
            install(before if before.enabled else None)
        if listener is not None:
            listener.close()
        if shared:
            from prometheus_client import multiprocess as prometheus_multiprocess

            # This process's live gauges (hashes waiting) leave the sum with it.
            prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def prepare_multiprocess(directory: Path) -> None:
    """Make ``directory`` the place the workers write their values: created, emptied of an
    earlier run's files (their counts would be added to this run's), and named in the
    environment the workers inherit. Before prometheus_client is imported in this process."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_DIR] = str(directory)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported before (a claims hook's module, say): share from now on
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
