"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from tokenward import __version__
from tokenward.app.operators import Admin
from tokenward.app.resource_servers import ClientService
from tokenward.app.service import SYSTEM_CLOCK, AuthService, Clock, claims_hook_of
from tokenward.core.claims import ClaimsHook
from tokenward.core.mfa import MfaMode
from tokenward.core.passkeys import PasskeyMode
from tokenward.core.passwords import PasswordHasher
from tokenward.infra import metrics
from tokenward.infra.clientip import ProxyTrust
from tokenward.infra.config import Settings, load_settings
from tokenward.infra.tracing import configure_tracing, trace_requests
from tokenward.web import account, admin, email_accounts, mfa, oauth, passkeys, routes
from tokenward.web.browser import install_browser_routes
from tokenward.web.fastpath import FastProtectedRoute
from tokenward.web.openapi import install_openapi
from tokenward.web.problems import install_problem_handlers
from tokenward.web.requestlog import RequestLogging
from tokenward.web.security import RequestGuard, html_script_hashes

__all__ = ["SWAGGER_UI_VERSION", "create_app"]

_log = logging.getLogger("tokenward")

SWAGGER_UI_VERSION = "5.36.0"
"""The exact swagger-ui-dist release /docs loads; its files' SRI hashes are below."""
_SWAGGER_UI = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}/"
# sha384 of the files of the npm tarball (npm pack swagger-ui-dist@5.36.0, whose sha512 npm
# checks against the registry): the browser refuses anything else the CDN may serve there.
_SWAGGER_JS = (
    _SWAGGER_UI + "swagger-ui-bundle.js",
    "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+",
)
_SWAGGER_CSS = (
    _SWAGGER_UI + "swagger-ui.css",
    "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc",
)


async def _every(
    seconds: float, work: Callable[[], Awaitable[None]], stopping: asyncio.Event, what: str
) -> None:
    """Run ``work`` now and then every ``seconds`` until ``stopping`` is set.

    Shutdown sets the event instead of cancelling the task, so that a database operation in
    flight finishes and returns its connection rather than being cut off half-way.
    """
    while not stopping.is_set():
        try:
            await work()
        except Exception as exc:  # the next round tries again; the server stays up
            _log.warning("%s failed: %s", what, type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)


async def _flush_metrics() -> None:
    metrics.current().flush()


async def _prune(service: AuthService) -> None:
    """Keep tables bounded by live sessions."""
    report = await Admin(service).prune()
    if report.sessions or report.events:
        _log.info("pruned %d sessions and %d events", report.sessions, report.events)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    hasher: PasswordHasher | None = None,
    claims_hook: ClaimsHook | None = None,
) -> FastAPI:
    """Build the app; the service (database, keys, migrations) opens in the lifespan.

    ``clock`` and ``hasher`` are for embedding and tests (a fake clock, cheaper argon2);
    ``claims_hook``: the custom claims function of an embedding app (else the one
    ``TOKENWARD_CLAIMS_HOOK`` names, if any; docs/authorization.md).
    """
    settings = settings or load_settings()
    hook = claims_hook or claims_hook_of(settings)  # a path that does not import: ConfigError

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Metrics (TOKENWARD_METRICS) count from the start, the service's opening included.
        with metrics.running(settings) as listener:
            app.state.metrics_listener = listener
            service = await AuthService.open(settings, clock=clock, hasher=hasher, claims_hook=hook)
            app.state.service = service
            app.state.clients = ClientService(service)
            service.signing_keys.report_signer()
            stopping = asyncio.Event()
            tasks = [
                asyncio.create_task(
                    _every(
                        settings.prune_interval.total_seconds(),
                        lambda: _prune(service),
                        stopping,
                        "pruning",
                    )
                ),
                # Follows rotations made elsewhere, and rotates when TOKENWARD_KEY_ROTATION says so.
                asyncio.create_task(
                    _every(
                        settings.key_reload_interval.total_seconds(),
                        service.signing_keys.reload_keys,
                        stopping,
                        "reloading keys",
                    )
                ),
                # Sends what the requests queued (docs/email.md); idle when mail is off.
                asyncio.create_task(service.send_mail(stopping)),
            ]
            if settings.metrics:
                # The requests tallied, written every second (infra/metrics.py).
                tasks.append(
                    asyncio.create_task(_every(1.0, _flush_metrics, stopping, "writing metrics"))
                )
            try:
                yield
            finally:
                stopping.set()
                await asyncio.gather(*tasks)
                await service.close()

    app = FastAPI(
        title="tokenward",
        version=__version__,
        summary="Short-lived JWT access tokens and rotating refresh tokens.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks: off, so that a request does not pay for asking
        # whether a tracer is configured; tokenward's traces (TOKENWARD_OTEL) are its own
        # outermost layer, below, which keeps query strings out of its spans.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.proxy_trust = ProxyTrust(settings.trusted_proxies)
    install_problem_handlers(app)
    install_openapi(app)
    app.include_router(routes.router)
    app.include_router(account.router)
    app.include_router(oauth.router)
    app.include_router(email_accounts.router)
    if settings.mfa is not MfaMode.OFF:
        app.include_router(mfa.router)
    app.include_router(mfa.reauthentication_router)
    if settings.passkeys is not PasskeyMode.OFF:
        app.include_router(passkeys.router)
        if settings.mfa is not MfaMode.OFF:
            app.include_router(passkeys.mfa_router)
        if settings.passkeys is PasskeyMode.PASSWORDLESS:
            app.include_router(passkeys.login_router)
    app.include_router(admin.router)
    if settings.mail_delivery == "log":  # development only (production refuses it)
        app.include_router(email_accounts.mailbox_router)

    @app.exception_handler(oauth.InvalidClientError)
    async def _invalid_client(_: Request, _exc: oauth.InvalidClientError) -> JSONResponse:
        return oauth.invalid_client_response()

    page_csp = install_browser_routes(app, demo=settings.serves_demo)
    if settings.serves_api_docs:
        page_csp["/docs"] = _install_docs(app)
    app.add_middleware(FastProtectedRoute, tokenward=app)  # innermost: same headers as the route
    if settings.allowed_origins:
        # Credentialed CORS for the listed front-ends only; no wildcard, ever.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            # The front-end reads RFC 9470's step-up challenge, how long a limit lasts and the
            # request id to quote to support.
            expose_headers=["WWW-Authenticate", "Retry-After", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(
        RequestGuard,
        hsts=settings.production,
        html_csp=page_csp,
        body_timeout=settings.request_body_timeout.total_seconds(),
    )
    # Outermost: the request id exists before anything else runs, and every answer is logged.
    app.add_middleware(RequestLogging, proxies=app.state.proxy_trust, clock=clock)
    if configure_tracing(settings):
        # Outside even that: the request's span is current while its access line is written.
        app.add_middleware(trace_requests)
    return app


def _with_integrity(page: str, url: str, digest: str) -> str:
    """Add SRI to the one tag that loads ``url``; fail loudly if FastAPI's page changed shape,
    rather than serve the CDN's file unchecked."""
    attribute = f'="{url}"'
    if page.count(attribute) != 1:
        raise RuntimeError(f"the Swagger UI page does not load {url} exactly once")
    return page.replace(attribute, f'{attribute} integrity="{digest}" crossorigin="anonymous"')


def _install_docs(app: FastAPI) -> str:
    """Swagger UI at /docs under a CSP that allows its two pinned files and its one inline
    script only. The page shares the origin of the refresh cookie, hence the exact version,
    the SRI hashes, and the CSP naming the files rather than the whole CDN."""
    openapi_url = app.openapi_url or "/openapi.json"
    page_bytes = get_swagger_ui_html(
        openapi_url=openapi_url,
        title="tokenward API",
        swagger_js_url=_SWAGGER_JS[0],
        swagger_css_url=_SWAGGER_CSS[0],
        oauth2_redirect_url=None,
        init_oauth={"usePkceWithAuthorizationCodeGrant": False},
    ).body
    page = bytes(page_bytes).decode()
    for url, digest in (_SWAGGER_JS, _SWAGGER_CSS):
        page = _with_integrity(page, url, digest)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    scripts = " ".join(html_script_hashes(page))
    return (
        f"default-src 'none'; script-src {_SWAGGER_JS[0]} {scripts}; style-src {_SWAGGER_CSS[0]}; "
        "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
