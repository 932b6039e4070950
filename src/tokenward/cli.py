"""The ``tokenward`` command: serve, db, users."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from tokenward.exceptions import ConfigError, TokenwardError, UnavailableError
from tokenward.infra.config import ENV_PREFIX, Settings, load_settings
from tokenward.storage import Database
from tokenward.storage.db import DatabaseError

if TYPE_CHECKING:
    from tokenward.app.operators import Admin
    from tokenward.storage.port import EventInfo, SessionInfo

__all__ = ["app", "main"]

app = typer.Typer(
    help="tokenward: JWT access tokens and rotating refresh tokens.", no_args_is_help=True
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
sessions_app = typer.Typer(help="See and end users' sessions.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys: list, rotate, retire.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
clients_app = typer.Typer(
    help="Client credentials: resource servers, and back offices (admin API scopes).",
    no_args_is_help=True,
)
roles_app = typer.Typer(help="Roles and the permissions they grant.", no_args_is_help=True)
app.add_typer(roles_app, name="roles")
app.add_typer(clients_app, name="clients")
mail_app = typer.Typer(help="The mail outbox.", no_args_is_help=True)
app.add_typer(mail_app, name="mail")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(sessions_app, name="sessions")

T = TypeVar("T")


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
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (share the database and keys).")
    ] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Also uvicorn's own line per request, raw path included (tokenward's access "
            "line, with the route template, is always on at log level info)."
        ),
    ] = False,
) -> None:
    """Run the HTTP service (uvicorn, uvloop, httptools).

    Without TOKENWARD_ISSUER (development), the issuer is the address served: --host/--port.
    """
    import logging.config
    import os

    from tokenward.infra.logs import logging_config

    settings = _settings()  # fail fast, with one line, before uvicorn starts
    log_config = logging_config(settings.log_output, settings.log_level.upper())
    logging.config.dictConfig(log_config)  # the migration's lines too, before uvicorn's
    if "issuer" not in settings.model_fields_set:  # production refuses this: see config
        # Through the environment, so that uvicorn's app factory (in every worker process,
        # which inherits it) builds the same settings as this one.
        os.environ[ENV_PREFIX + "ISSUER"] = served_issuer(host, port)
        settings = _settings()
    _check_claims_hook(settings)  # a hook that does not import: one line, nothing migrated
    if settings.otel:
        from tokenward.infra.tracing import check_tracing

        try:
            check_tracing()  # the extra missing: one line here, not a traceback per worker
        except ConfigError as error:
            typer.echo(f"tokenward: {error}", err=True)
            raise typer.Exit(2) from None
    # Migrate, make the master secret and the first key once, here, before any worker runs.
    _run(lambda: _open_and_close(settings))
    with _metrics_for_workers(settings):
        _serve(settings, host, port, workers, access_log, log_config)


@contextlib.contextmanager
def _metrics_for_workers(settings: Settings) -> Iterator[None]:
    """With TOKENWARD_METRICS on: the workers write their values to a directory made empty
    now (PROMETHEUS_MULTIPROC_DIR, else a new temporary one), and this process serves their
    sum on TOKENWARD_METRICS_LISTEN for as long as they run."""
    if not settings.metrics:
        yield
        return
    import os
    import shutil
    import tempfile

    from tokenward.infra.metrics import MULTIPROCESS_DIR, prepare_multiprocess, serve_metrics

    chosen = os.environ.get(MULTIPROCESS_DIR)
    directory = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="tokenward-metrics-"))
    prepare_multiprocess(directory)
    host, port = settings.metrics_address
    try:
        listener = serve_metrics(None, host, port)
    except OSError as error:
        if not chosen:
            shutil.rmtree(directory, ignore_errors=True)
        typer.echo(f"tokenward: metrics_listen: cannot listen on {host}:{port} ({error})", err=True)
        raise typer.Exit(2) from None
    try:
        yield
    finally:
        listener.close()
        if not chosen:
            shutil.rmtree(directory, ignore_errors=True)


def _serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    access_log: bool,
    log_config: dict[str, Any],
) -> None:
    import uvicorn

    uvicorn.run(
        "tokenward.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="tokenward.web.timeouts:HeadTimeoutProtocol",
        # Forwarded headers are tokenward's business (trusted proxies), never uvicorn's default.
        proxy_headers=False,
        server_header=False,
        access_log=access_log,
        # Every logger, uvicorn's included, through tokenward's one formatter (in each worker).
        log_config=log_config,
        log_level=settings.log_level,
    )


def served_issuer(host: str, port: int) -> str:
    """``http://host:port`` as clients reach ``serve --host --port``: an IPv6 address in
    brackets, and a wildcard bind (``0.0.0.0``, ``::``) as the loopback of its family."""
    from ipaddress import ip_address

    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return f"http://{host or '127.0.0.1'}:{port}"  # a name such as localhost
    if address.is_unspecified:
        host = "127.0.0.1" if address.version == 4 else "::1"
    if address.version == 6:
        host = "[" + host.replace("%", "%25") + "]"  # RFC 6874: the zone's % is escaped
    return f"http://{host}:{port}"


def _check_claims_hook(settings: Settings) -> None:
    from tokenward.app.service import claims_hook_of

    try:
        claims_hook_of(settings)
    except ConfigError as exc:
        typer.echo(f"tokenward: {exc}", err=True)
        raise typer.Exit(2) from None


async def _open_and_close(settings: Settings) -> None:
    from tokenward.app.service import AuthService

    service = await AuthService.open(settings)
    await service.close()


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run one async operation; a tokenward or database error exits 1 with one line."""

    async def run() -> T:
        return await make()

    try:
        return asyncio.run(run())
    except TokenwardError as exc:
        typer.echo(f"tokenward: {exc}", err=True)
        raise typer.Exit(1) from None
    except DatabaseError as exc:
        reason = getattr(exc, "orig", None) or exc.__class__.__name__
        typer.echo(f"tokenward: database error: {reason}", err=True)
        raise typer.Exit(1) from None


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

    _run(run)
    typer.echo("database is up to date")


@db_app.command("check")
def db_check() -> None:
    """Check that the database (and Redis, when configured) answer and migrations are current.

    Exits 0 when all is well, 1 with one line per problem otherwise.
    """
    from tokenward.infra.ratelimit import RateLimiter

    settings = _settings()

    async def run() -> list[str]:
        problems: list[str] = []
        database = Database(settings.sqlalchemy_url)
        try:
            current, head = await database.revision()
        except UnavailableError as exc:
            problems.append(str(exc))
        else:
            if current == head:
                typer.echo(f"database ok: migrations current ({head})")
            else:
                problems.append(
                    f"database at migration {current or 'none'}, this version needs {head}: "
                    "run tokenward db upgrade"
                )
        finally:
            await database.dispose()
        if settings.redis_url:
            limiter = RateLimiter(settings)
            try:
                await limiter.ping()
                typer.echo("redis ok")
            except UnavailableError as exc:
                problems.append(str(exc))
            finally:
                await limiter.close()
        return problems

    problems = _run(run)
    for problem in problems:
        typer.echo(f"tokenward: {problem}", err=True)
    if problems:
        raise typer.Exit(1)


@users_app.command("import")
def users_import(
    file: Annotated[Path, typer.Argument(help="JSON lines of {email, password_hash}.")],
) -> None:
    """Import users with their existing bcrypt or argon2 hashes (no password reset)."""
    from tokenward.app.service import AuthService

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
            report = await service.accounts.import_users(records)
        finally:
            await service.close()
        rejected = ", ".join(map(str, report.rejected)) or "none"
        typer.echo(
            f"imported {report.imported}, skipped {report.skipped_existing} existing, "
            f"rejected records: {rejected}"
        )
        for number, reason in report.reasons.items():
            typer.echo(f"record {number}: {reason}", err=True)
        if report.rejected:
            raise typer.Exit(1)

    _run(run)


def _with_admin(action: Callable[[Admin], Awaitable[T]]) -> T:
    """Open the service, run one operator action, close; a tokenward error exits 1."""
    from tokenward.app.operators import Admin
    from tokenward.app.service import AuthService

    settings = _settings()

    async def run() -> T:
        service = await AuthService.open(settings)
        try:
            return await action(Admin(service))
        finally:
            await service.close()

    return _run(run)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


Email = Annotated[str, typer.Argument(help="The user's email address.")]


@users_app.command("create")
def users_create(
    email: Email,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user (the password policy applies)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _with_admin(lambda admin: admin.service.accounts.register(email, password))
    typer.echo(f"created user {user.email} ({user.id})")


@users_app.command("list")
def users_list() -> None:
    """List users with their number of live sessions."""
    users = _with_admin(lambda admin: admin.list_users())
    for user in users:
        state = "disabled" if user.disabled else "active"
        typer.echo(
            f"{user.email}\t{user.id}\t{state}\t{user.live_sessions} live sessions\t"
            f"created {_when(user.created_at)}"
        )
    typer.echo(f"{len(users)} users")


@users_app.command("disable")
def users_disable(email: Email) -> None:
    """Disable a user: every session ends at once and login is refused."""
    ended = _with_admin(lambda admin: admin.set_disabled(email, True))
    typer.echo(f"disabled {email.strip()}; ended {ended} sessions")


@users_app.command("enable")
def users_enable(email: Email) -> None:
    """Enable a disabled user again."""
    _with_admin(lambda admin: admin.set_disabled(email, False))
    typer.echo(f"enabled {email.strip()}")


@users_app.command("send-reset")
def users_send_reset(email: Email) -> None:
    """Mail the user a password-reset link (queued; the running server sends it). You never
    see the link and never set the password."""
    _with_admin(lambda admin: admin.service.email_accounts.send_reset(email))
    typer.echo(f"queued a password-reset mail to {email.strip()}")


@users_app.command("verify")
def users_verify(email: Email) -> None:
    """Mark the user's address as verified."""
    changed = _with_admin(lambda admin: admin.service.email_accounts.mark_verified(email))
    typer.echo(f"{email.strip()} {'verified' if changed else 'was already verified'}")


@users_app.command("delete")
def users_delete(
    email: Email,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user: every session ends, the user and their links go; events stay under the
    user's id, without the address."""
    if not yes:
        typer.confirm(f"Delete {email.strip()} and end every session?", abort=True)

    async def delete(admin: Admin) -> bool:
        from tokenward.core.events import OPERATOR, ClientInfo

        account = await admin.user(email)
        return await admin.service.email_accounts.remove(
            account.id, ClientInfo(), admin.service.now(), actor=OPERATOR
        )

    _with_admin(delete)
    typer.echo(f"deleted {email.strip()}")


@mail_app.command("list")
def mail_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """The outbox, newest first: state, template, attempts (never a recipient or a link)."""
    mails = _with_admin(lambda admin: admin.service.outbox.list(limit))
    for mail in mails:
        error = f"\t{_printable(mail.last_error)}" if mail.last_error else ""
        typer.echo(
            f"{mail.id}\t{mail.state}\t{mail.template}\t{mail.attempts} attempts\t"
            f"queued {_when(mail.created_at)}{error}"
        )
    typer.echo(f"{len(mails)} mails")


@mail_app.command("retry")
def mail_retry(mail_id: Annotated[int, typer.Argument(help="The mail's id (mail list).")]) -> None:
    """Queue a given-up mail again (while its sealed payload is kept: a day)."""
    if not _with_admin(lambda admin: admin.service.outbox.retry(mail_id)):
        typer.echo(
            f"tokenward: mail {mail_id} is not a given-up mail that can be retried", err=True
        )
        raise typer.Exit(1)
    typer.echo(f"mail {mail_id} queued again")


def _session_line(session: SessionInfo) -> str:
    return (
        f"{session.id}\t{session.device}\t{session.ip or '-'}\t"
        f"created {_when(session.created_at)}\tlast used {_when(session.last_used_at)}\t"
        f"expires {_when(session.expires_at)}"
    )


@sessions_app.command("list")
def sessions_list(email: Email) -> None:
    """List a user's live sessions."""
    sessions = _with_admin(lambda admin: admin.sessions(email))
    for session in sessions:
        typer.echo(_session_line(session))
    typer.echo(f"{len(sessions)} live sessions")


@sessions_app.command("revoke")
def sessions_revoke(
    email: Email,
    session: Annotated[str | None, typer.Option(help="End only this session.")] = None,
) -> None:
    """End a user's sessions (all of them, or one with --session)."""
    ended = _with_admin(lambda admin: admin.revoke(email, session))
    if session is not None and not ended:
        typer.echo(f"tokenward: {email.strip()} has no live session {session}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {ended} sessions of {email.strip()}")


def _printable(text: str | None) -> str:
    """``text`` on one line and in one column: a backslash, and every character that is not
    printable (tab, newline, C0/C1 controls, DEL, U+2028/U+2029, bidi overrides...), escaped
    as Python would (``\\t``, ``\\x1b``, ``\\u2028``); ``-`` when absent or empty."""
    if not text:
        return "-"
    if text.isprintable() and "\\" not in text:
        return text
    escaped = []
    for char in text:
        if char == "\\":
            escaped.append("\\\\")
        elif char.isprintable():
            escaped.append(char)
        else:
            escaped.append(ascii(char)[1:-1])  # '\t', '\x1b', '\x85', '\u2028', '\U000e0001'
    return "".join(escaped)


def _event_line(event: EventInfo) -> str:
    # json.dumps escapes every control and non-ASCII character but DEL: escaped here too.
    detail = (
        json.dumps(event.detail, separators=(",", ":")).replace("\x7f", "\\u007f")
        if event.detail
        else "-"
    )
    return (
        f"{_when(event.at)}\t{_printable(event.type)}\tuser={_printable(event.user_id)}\t"
        f"session={_printable(event.session_id)}\tip={_printable(event.ip)}\t"
        f"ua={_printable(event.user_agent)}\t{detail}"
    )


@app.command()
def events(
    user: Annotated[str | None, typer.Option(help="Only this user's events (email).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    follow: Annotated[bool, typer.Option(help="Keep printing new events as they come.")] = False,
) -> None:
    """Show security events, oldest of the last LIMIT first."""

    async def show(admin: Admin) -> None:
        recent = list(reversed(await admin.events(user, limit=limit)))
        for event in recent:
            typer.echo(_event_line(event))
        last = recent[-1].id if recent else 0
        while follow:
            await asyncio.sleep(1)
            for event in await admin.events(user, after_id=last, limit=1000):
                typer.echo(_event_line(event))
                last = event.id

    with contextlib.suppress(KeyboardInterrupt):
        _with_admin(show)


@keys_app.command("list")
def keys_list() -> None:
    """List signing keys and their state (upcoming, signing, verifying, expired, retired)."""
    for key in _with_admin(lambda admin: admin.keys()):
        retired = f"\tretired {_when(key.retired_at)}" if key.retired_at else ""
        typer.echo(
            f"{key.kid}\t{key.alg}\t{key.state}\tactive from {_when(key.activates_at)}{retired}"
        )


@keys_app.command("rotate")
def keys_rotate(
    now: Annotated[
        bool, typer.Option("--now", help="Sign with it at once (skips the JWKS cache wait).")
    ] = False,
) -> None:
    """Make a new key: published now, signing once every cached JWKS holds it."""
    key = _with_admin(lambda admin: admin.rotate_key(immediately=now))
    typer.echo(f"new key {key.kid} ({key.alg}) signs from {_when(key.activates_at)}")


# A kid is base64url and may begin with "-": taken as the argument, not as an option.
@keys_app.command("retire", context_settings={"ignore_unknown_options": True})
def keys_retire(kid: Annotated[str, typer.Argument(help="The key id (kid).")]) -> None:
    """Withdraw a key at once (compromise): tokens it signed stop verifying."""
    _with_admin(lambda admin: admin.retire_key(kid))
    typer.echo(f"retired key {kid}")


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(help="A name to recognise it by.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="An admin API scope: admin:users:read, admin:users, admin:roles or "
            "admin:sessions (repeat for several). None: a resource server only.",
        ),
    ] = None,
) -> None:
    """Credentials for a resource server (introspection, revocation, the revocation feed),
    and with --scope for a back office on the admin API."""
    from tokenward.app.resource_servers import ClientService
    from tokenward.core.scopes import parse_scopes

    try:
        parse_scopes(scope or ())  # before opening anything: a typo exits 2, as a bad option
    except ValueError as error:
        typer.echo(f"tokenward: {error}", err=True)
        raise typer.Exit(2) from None
    client, secret = _with_admin(
        lambda admin: ClientService(admin.service).create(name, scope or ())
    )
    typer.echo(f"client_id={client.id}")
    typer.echo(f"client_secret={secret}")
    typer.echo("The secret is shown once; tokenward keeps only its hash.", err=True)


@clients_app.command("list")
def clients_list() -> None:
    """List resource-server clients (never their secrets)."""
    from tokenward.app.resource_servers import ClientService

    clients = _with_admin(lambda admin: ClientService(admin.service).list())
    for client in clients:
        scopes = " ".join(client.scopes) or "-"
        typer.echo(f"{client.id}\t{client.name}\t{scopes}\tcreated {_when(client.created_at)}")
    typer.echo(f"{len(clients)} clients")


@clients_app.command("delete")
def clients_delete(client_id: Annotated[str, typer.Argument(help="The client_id.")]) -> None:
    """Delete a client: its credentials stop working at once."""
    from tokenward.app.resource_servers import ClientService

    if not _with_admin(lambda admin: ClientService(admin.service).delete(client_id)):
        typer.echo(f"tokenward: no client {client_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted client {client_id}")


EndSessions = Annotated[
    bool,
    typer.Option(
        "--end-sessions",
        help="End the user's sessions too: resource servers refuse their access tokens "
        "within the revocation feed's bound, not the token lifetime.",
    ),
]
Role = Annotated[str, typer.Argument(help="The role's name.")]


@roles_app.command("create")
def roles_create(
    name: Role,
    permission: Annotated[
        list[str] | None,
        typer.Option("--permission", "-p", help="A permission it grants (repeat for several)."),
    ] = None,
) -> None:
    """Create a role, or replace the permissions of an existing one."""
    from tokenward.core.events import OPERATOR

    role, created = _with_admin(
        lambda admin: admin.service.roles.put(name, permission or (), OPERATOR)
    )
    permissions = " ".join(role.permissions) or "no permissions"
    typer.echo(f"{'created' if created else 'updated'} role {role.name}: {permissions}")


@roles_app.command("list")
def roles_list() -> None:
    """Every role and the permissions it grants."""
    roles = _with_admin(lambda admin: admin.service.roles.list())
    for role in roles:
        typer.echo(f"{role.name}\t{' '.join(role.permissions) or '-'}")
    typer.echo(f"{len(roles)} roles")


@roles_app.command("delete")
def roles_delete(name: Role, end_sessions: EndSessions = False) -> None:
    """Delete a role; whoever held it loses it at their next refresh."""
    from tokenward.core.events import OPERATOR

    deleted = _with_admin(
        lambda admin: admin.service.roles.delete(name, OPERATOR, end_sessions=end_sessions)
    )
    if not deleted:
        typer.echo(f"tokenward: no role {name}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted role {name}")


@users_app.command("grant")
def users_grant(email: Email, role: Role, end_sessions: EndSessions = False) -> None:
    """Give a user a role: in their next refreshed access token."""
    granted = _with_admin(lambda admin: admin.grant(email, role, end_sessions=end_sessions))
    typer.echo(f"granted {role} to {email}" if granted else f"{email} already holds {role}")


@users_app.command("revoke")
def users_revoke(email: Email, role: Role, end_sessions: EndSessions = False) -> None:
    """Take a role from a user: gone from their next refreshed access token."""
    _with_admin(lambda admin: admin.revoke_role(email, role, end_sessions=end_sessions))
    typer.echo(f"revoked {role} from {email}")


@users_app.command("reset-mfa")
def users_reset_mfa(email: Email) -> None:
    """Remove every second factor of a user (a lost phone and lost recovery codes): the next
    sign-in asks for the password alone. Check who is asking first: this is the way around
    the second factor."""
    removed = _with_admin(lambda admin: admin.reset_mfa(email))
    typer.echo(f"removed {removed} second factors of {email.strip()}")


@db_app.command("prune")
def db_prune() -> None:
    """Delete sessions ended over a day ago and events past TOKENWARD_EVENT_RETENTION."""
    report = _with_admin(lambda admin: admin.prune())
    typer.echo(f"pruned {report.sessions} sessions and {report.events} events")


def main() -> None:
    app()
