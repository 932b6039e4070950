"""The ``tokenward`` command: serve, db, users."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenward.config import Settings, load_settings
from tokenward.exceptions import ConfigError
from tokenward.store import Database

__all__ = ["app", "main"]

app = typer.Typer(
    help="tokenward: JWT access tokens and rotating refresh tokens.", no_args_is_help=True
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"tokenward: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the HTTP service (uvicorn, uvloop, httptools)."""
    import uvicorn

    _settings()  # fail fast, with one line, before uvicorn starts
    uvicorn.run(
        "tokenward.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        # Forwarded headers are tokenward's business (trusted proxies), never uvicorn's default.
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    settings = _settings()

    async def run() -> None:
        database = Database(settings.sqlalchemy_url)
        try:
            await database.migrate()
        finally:
            await database.dispose()

    asyncio.run(run())
    typer.echo("database is up to date")


@users_app.command("import")
def users_import(
    file: Annotated[Path, typer.Argument(help="JSON lines of {email, password_hash}.")],
) -> None:
    """Import users with their existing bcrypt or argon2 hashes (no password reset)."""
    from tokenward.service import AuthService

    settings = _settings()
    records: list[dict[str, Any]] = []
    with file.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {}
            records.append(record if isinstance(record, dict) else {})

    async def run() -> None:
        service = await AuthService.open(settings)
        try:
            report = await service.import_users(records)
        finally:
            await service.close()
        rejected = ", ".join(map(str, report.rejected)) or "none"
        typer.echo(
            f"imported {report.imported}, skipped {report.skipped_existing} existing, "
            f"rejected records: {rejected}"
        )
        if report.rejected:
            raise typer.Exit(1)

    asyncio.run(run())


def main() -> None:
    app()
