"""Readiness for load balancers (`/readyz`) and for operators (`tokenward db check`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import SHARED_SECRET, Api, cli, ok

from tokenward.infra.config import load_settings
from tokenward.storage.db import Database


async def test_readyz_reports_each_dependency(api: Api) -> None:
    response = await api.http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    expected = {"database": "ok"}
    if os.environ.get("TOKENWARD_REDIS_URL"):  # the PostgreSQL run shares limits on Redis
        expected["redis"] = "ok"
    assert body["checks"] == expected
    assert response.headers["cache-control"] == "no-store"


async def test_healthz_is_liveness_only(api: Api) -> None:
    response = await api.http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_db_check_passes_on_a_current_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ok(cli(data_dir, "db", "upgrade"))
    out = ok(cli(data_dir, "db", "check"))
    assert out.startswith("database ok: migrations current (")
    assert ("redis ok" in out) == bool(os.environ.get("TOKENWARD_REDIS_URL"))


async def test_db_check_fails_on_an_old_schema_until_upgraded(tmp_path: Path) -> None:
    from alembic import command

    data_dir = tmp_path / "data"
    ok(cli(data_dir, "db", "upgrade"))
    database = Database(load_settings(data_dir=data_dir).sqlalchemy_url)
    try:
        _, head = await database.revision()
        await database.run_alembic(lambda config: command.downgrade(config, "-1"))
        old, _ = await database.revision()
    finally:
        await database.dispose()
    assert old != head

    result = cli(data_dir, "db", "check")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"tokenward: database at migration {old}, this version needs {head}: "
        "run tokenward db upgrade"
    )
    ok(cli(data_dir, "db", "upgrade"))
    ok(cli(data_dir, "db", "check"))


@pytest.mark.sqlite_only  # names its own unreachable server; the same on either run
def test_db_check_and_serve_fail_in_one_line_when_the_database_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(
        "TOKENWARD_DATABASE_URL", f"postgresql+asyncpg://tokenward@127.0.0.1:{port}/tokenward"
    )
    monkeypatch.setenv("TOKENWARD_SECRET_KEY", SHARED_SECRET)
    for command in (["db", "check"], ["serve", "--port", "1"]):
        result = cli(tmp_path / "data", *command)
        assert result.returncode == 1
        assert result.stderr.startswith("tokenward: database unavailable ("), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


async def test_a_database_from_a_newer_version_is_refused_in_one_line(tmp_path: Path) -> None:
    from sqlalchemy import text

    data_dir = tmp_path / "data"
    ok(cli(data_dir, "db", "upgrade"))
    database = Database(load_settings(data_dir=data_dir).sqlalchemy_url)
    try:
        async with database.write() as db:
            await db.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    finally:
        await database.dispose()

    for command in (["db", "check"], ["db", "upgrade"], ["users", "list"]):
        result = cli(data_dir, *command)
        assert result.returncode == 1
        assert result.stderr == (
            "tokenward: the database is at migration from_the_future, which this version of "
            "tokenward does not know: a newer version migrated it; run that version or restore "
            "a backup\n"
        ), result.stderr


@pytest.mark.sqlite_only  # names its own unreachable Redis; the same on either run
async def test_an_unreachable_redis_fails_closed_with_503(tmp_path: Path) -> None:
    """No counters, no password guessing: limited endpoints answer 503, fast; the rest work."""
    import socket
    import time

    import httpx
    from asgi_lifespan import LifespanManager
    from support import FAST_HASHER, LIFESPAN_TIMEOUT, PASSWORD, make_settings

    from tokenward.web import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(tmp_path / "data", redis_url=f"redis://127.0.0.1:{port}/0")
    app = create_app(settings, hasher=FAST_HASHER)
    async with LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            started = time.monotonic()
            payload = {"email": "ada@example.com", "password": PASSWORD}
            for path in ("/auth/register", "/auth/login"):
                response = await client.post(path, json=payload)
                assert response.status_code == 503, response.text
                assert response.json()["type"] == "urn:tokenward:problem:unavailable"
                assert response.headers["retry-after"] == "2"
            assert time.monotonic() - started < 10
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable"}
            assert (await client.get("/.well-known/jwks.json")).status_code == 200
