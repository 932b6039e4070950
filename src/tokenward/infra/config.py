"""Settings from ``TOKENWARD_*`` environment variables and ``.env``, validated once at start."""

from __future__ import annotations

import re
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from limits import parse
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tokenward.core.keys import SigningAlg
from tokenward.core.mfa import MfaMode
from tokenward.core.passkeys import CounterRegression, PasskeyMode
from tokenward.core.roles import check_role_name
from tokenward.exceptions import ConfigError, InvalidRoleError

__all__ = ["ENV_PREFIX", "Settings", "SigningAlg", "load_settings", "parse_duration"]

ENV_PREFIX = "TOKENWARD_"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object, *, allow_zero: bool = False) -> timedelta:
    """Read ``900``, ``"900"``, ``"15m"``, ``"12h"`` or ``"7d"`` as a positive duration
    (or zero, with ``allow_zero``)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        raise ValueError("expected seconds or a number with s, m, h or d (e.g. 900, 15m, 7d)")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError("must be zero or longer" if allow_zero else "must be longer than zero")
    return timedelta(seconds=seconds)


def _duration_or_zero(value: object) -> timedelta:
    return parse_duration(value, allow_zero=True)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
DurationOrZero = Annotated[timedelta, BeforeValidator(_duration_or_zero)]


def _rate_limit(value: object) -> str:
    text = str(value).strip()
    try:
        parse(text)
    except ValueError:
        raise ValueError("expected a rate such as 10/minute or 10/15 minutes") from None
    return text


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _comma_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        return tuple(str(part).strip() for part in value)
    raise ValueError("expected a comma-separated list")


_HOOK_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_RP_ID = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*(?<![.0-9])")
"""A relying party id: a lower-case domain whose last label is not a number (no IP address)."""

RateLimitText = Annotated[str, BeforeValidator(_rate_limit)]
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


class Settings(BaseSettings):
    """Every knob of the server. Each field is ``TOKENWARD_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "production"] = "development"
    """``production`` turns on Secure cookies, HSTS and the strict start-up checks."""
    data_dir: Path = Path("tokenward-data")
    """Where the SQLite database and the key files live."""
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite+aiosqlite:///<data_dir>/tokenward.db``."""
    issuer: str = Field(default="http://127.0.0.1:8000", max_length=255)
    """The ``iss`` of every access token: this server's public base URL."""
    audience: str | None = Field(default=None, max_length=255)
    """The ``aud`` of every access token, when set."""
    access_ttl: Duration = timedelta(minutes=15)
    """Lifetime of an access token."""
    refresh_ttl: Duration = timedelta(days=7)
    """Idle timeout of a session: each rotation pushes its end this far out."""
    refresh_reuse_interval: DurationOrZero = timedelta(seconds=10)
    """How long a rotated-out refresh token still returns the same successor (racing tabs);
    ``0``: none, any replay of a rotated-out token ends the session as theft."""
    session_max_age: Duration = timedelta(days=30)
    """Absolute lifetime of a session, whatever its activity."""
    signing_alg: SigningAlg = "ES256"
    """JWS algorithm of access tokens."""
    secret_key: SecretStr | None = None
    """The server secret (at least 32 bytes), the same on every instance; default: a file made
    on first start in ``<data_dir>/keys/secret.key``. Refresh tokens and the encryption of
    signing keys at rest derive from it."""
    key_rotation: Duration | None = None
    """Rotate the signing key automatically this often (e.g. ``30d``); off by default."""
    jwks_max_age: Duration = timedelta(minutes=5)
    """JWKS cache lifetime; a new key is published this long before it signs."""
    key_reload_interval: Duration = timedelta(seconds=30)
    """How often an instance rereads the keys (rotations by the CLI or other instances)."""
    hs256_secret: SecretStr | None = None
    """The shared secret when ``signing_alg`` is HS256 (at least 32 bytes)."""
    event_retention: Duration = timedelta(days=90)
    """Security events older than this are pruned."""
    prune_interval: Duration = timedelta(hours=1)
    """How often the server prunes ended sessions and old events."""
    rate_limits: bool = True
    """Turn every rate limit off (benchmarks, soak tests): never in production."""
    redis_url: str | None = None
    """``redis://host:port/db``: rate limits shared by every instance (else in-process)."""
    rate_limit_login_failures_account_ip: RateLimitText = "10/15 minutes"
    """Failed logins (and password checks) per account and client IP."""
    rate_limit_login_failures_account: RateLimitText = "100/hour"
    """Failed logins per account from any IP (a distributed guess at one account)."""
    rate_limit_login_ip: RateLimitText = "60/minute"
    """Every login attempt per client IP (the per-IP ceiling, also for /auth/token)."""
    rate_limit_register_ip: RateLimitText = "20/hour"
    """Registrations per client IP."""
    rate_limit_refresh_ip: RateLimitText = "600/minute"
    """Refreshes per client IP."""
    rate_limit_refresh_session: RateLimitText = "30/minute"
    """Refreshes per session."""
    rate_limit_password_change_account: RateLimitText = "10/hour"  # noqa: S105 - a rate
    """Password changes (right or wrong current password) per account."""
    rate_limit_user_actions: RateLimitText = "60/minute"
    """Signed-in actions that write security events (sign-ins, revoking sessions, signing out
    everywhere), per user: the event log of one account cannot be flooded."""
    rate_limit_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    """Per-IP limits count an IPv6 client by this network prefix (a host usually has a /64)."""
    max_sessions_per_user: int = Field(default=50, ge=1, le=10_000)
    """Live sessions one user may hold; a new sign-in past it ends the oldest."""
    trusted_proxies: CommaList = ()
    """Addresses or networks of reverse proxies whose X-Forwarded-For is believed."""
    allowed_origins: CommaList = ()
    """Front-end origins (besides this server's own) allowed to use the cookie endpoints."""
    cookie_samesite: Literal["strict", "lax", "none"] = "strict"
    """SameSite of the refresh cookie. ``none`` only for a front-end on another *site*; it is
    always Secure and leans on the Origin check alone against CSRF (docs/browser.md)."""
    demo_page: bool | None = None
    """Serve the demo page at ``/``; default: on in development, off in production."""
    api_docs: bool | None = None
    """Serve Swagger UI at ``/docs``; default: on in development, off in production (it runs
    a CDN's script on the origin of the refresh cookie, pinned by SRI)."""
    cookie_host_prefix: bool = False
    """Name the refresh cookie ``__Host-tw_refresh`` with ``Path=/``: no other host (a sibling
    subdomain) can set or shadow it. Needs a Secure cookie (production, or SameSite none)."""
    request_header_timeout: Duration = timedelta(seconds=10)
    """``tokenward serve`` closes a connection whose request head is not complete this long
    after it opened or after its previous response (slowloris)."""
    request_body_timeout: Duration = timedelta(seconds=10)
    """A request body not received whole this long after its head gets 408."""
    password_min_length: int = Field(default=15, ge=8, le=64)
    """NIST SP 800-63B rev. 4: 15 characters for a password used as a single factor."""
    # -- logs (docs/operations.md) -----------------------------------------------------------
    log_format: Literal["json", "text"] | None = None
    """``tokenward serve``'s log lines: ``json`` (one object per line) or ``text``; default
    ``json`` in production, ``text`` in development."""
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        "info"
    )
    """The least severe lines written; ``info`` includes one access line per request and every
    security event."""
    # -- metrics and traces (docs/operations.md) --------------------------------------------
    metrics: bool = False
    """Prometheus metrics (``on``/``off``), served on their own listener, never the app's port."""
    metrics_listen: str = "127.0.0.1:9464"
    """``host:port`` of the metrics listener (port 0: any free port, for tests)."""
    otel: bool = False
    """OpenTelemetry spans for requests and database calls (the ``tokenward[otel]`` extra),
    configured by the standard ``OTEL_*`` variables."""
    # -- accounts by email (docs/email.md) ---------------------------------------------------
    email_delivery: Literal["smtp", "log", "none"] | None = None
    """How mail leaves: ``smtp``, ``log`` (development only: to the server log and the demo
    page's mailbox) or ``none``; default ``log`` in development, ``none`` in production."""
    smtp_url: str | None = None
    """``smtp://[user[:password]@]host[:port]`` (STARTTLS required), ``smtps://...`` (TLS from
    the start), ``smtp://host:port?tls=none`` (plain: a relay on loopback only)."""
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: Duration = timedelta(seconds=10)
    email_from: str | None = None
    """The From of every mail, e.g. ``Example <no-reply@example.com>``."""
    app_url: str | None = None
    """Where mailed links point (``<app_url>/reset-password#token=...``); never a request's
    Host. Default in development: the issuer (whose demo page has the landing pages)."""
    email_templates: Path | None = None
    """A folder whose mail templates replace the built-in ones, file by file."""
    email_max_attempts: int = Field(default=5, ge=1, le=50)
    """Delivery attempts before a mail is given up (``email.delivery_failed``)."""
    email_retry_backoff: Duration = timedelta(seconds=30)
    """The wait after a first failed attempt; each next wait is four times longer."""
    email_verification: Literal["off", "optional", "required"] = "off"
    """``optional``: a verification mail, sign-in allowed; ``required``: no sign-in until
    verified, and registration answers alike for new and taken addresses."""
    email_verification_ttl: Duration = timedelta(hours=24)
    password_reset_ttl: Duration = timedelta(hours=1)
    email_change_ttl: Duration = timedelta(hours=24)
    password_reset_end_sessions: Literal["all", "none"] = "all"  # noqa: S105 - a choice
    """``all``: a password reset ends every session of the user."""
    rate_limit_email_address: RateLimitText = "5/hour"
    """Mails to one address (keyed on the address whether or not it has an account)."""
    rate_limit_email_ip: RateLimitText = "30/hour"
    """Requests that may send a mail, per client IP."""
    email_resend_cooldown: Duration = timedelta(seconds=60)
    """The least time between two mails of one kind to one address."""
    invitation_ttl: Duration = timedelta(days=7)
    """How long the link of an admin's invitation (a user created without a password) lasts."""
    # -- roles, claims and the admin API (docs/authorization.md, docs/admin.md) --------------
    default_roles: CommaList = ()
    """Roles every new user is granted (those that exist: ``tokenward roles create``)."""
    claims_hook: str | None = None
    """``module:function`` called at sign-in and each refresh for extra access token claims."""
    claims_hook_timeout: Duration = timedelta(seconds=2)
    """A hook that has not answered in this long fails the request (503, no token)."""
    claims_max_bytes: int = Field(default=2048, ge=64, le=3072)
    """The hook's extra claims, as compact JSON, at most this many bytes."""
    rate_limit_admin_client: RateLimitText = "600/minute"
    """Admin API requests per client."""
    # -- a second factor (docs/mfa.md) -------------------------------------------------------
    mfa: MfaMode = MfaMode.OPTIONAL
    """``off``: passwords only (enrolled factors wait); ``optional``: users who enrol a factor
    sign in with it; ``required``: users without a factor can only enrol one."""
    reauth_max_age: Duration = timedelta(minutes=10)
    """How recent an authentication adding or removing a factor needs (``auth_time``)."""
    rate_limit_mfa_failures_account: RateLimitText = "10/15 minutes"
    """Wrong second-factor codes per account, across its pending sign-ins."""
    totp_issuer: str = Field(default="tokenward", min_length=1, max_length=64)
    """The name authenticator apps show beside the account (the ``otpauth://`` issuer)."""
    # -- passkeys (docs/passkeys.md) ---------------------------------------------------------
    passkeys: PasskeyMode = PasskeyMode.OFF
    """``second-factor``: a passkey after the password; ``passwordless``: also alone."""
    webauthn_rp_id: str | None = None
    """The relying party id (a domain: ``example.com``); never taken from a request."""
    webauthn_rp_name: str = Field(default="tokenward", min_length=1, max_length=64)
    webauthn_origins: CommaList = ()
    """Origins a ceremony may come from, exactly (default: the issuer's origin)."""
    webauthn_challenge_ttl: Duration = timedelta(minutes=5)
    passkeys_max_per_user: int = Field(default=10, ge=1, le=100)
    webauthn_counter_regression: CounterRegression = CounterRegression.WARN
    """``reject`` refuses an assertion whose signature counter did not move forward."""

    @model_validator(mode="after")
    def _check_passkeys(self) -> Settings:
        if self.passkeys is PasskeyMode.OFF:
            return self
        if not self.webauthn_rp_id or not _RP_ID.fullmatch(self.webauthn_rp_id):
            raise ValueError(
                "webauthn_rp_id: passkeys need the relying party's domain (example.com)"
            )
        for origin in self.webauthn_allowed_origins:
            parts = urlsplit(origin)
            host = parts.hostname or ""
            rp_id = self.webauthn_rp_id
            if parts.scheme not in {"http", "https"} or parts.path or not host:
                raise ValueError(f"webauthn_origins: {origin!r} is not an origin")
            if host != rp_id and not host.endswith("." + rp_id):
                raise ValueError(f"webauthn_origins: {origin!r} is not within {rp_id}")
            if parts.scheme == "http" and host != "localhost":
                raise ValueError(f"webauthn_origins: {origin!r} must be https")
        return self

    @property
    def webauthn_allowed_origins(self) -> tuple[str, ...]:
        """The origins ceremonies may come from: the listed ones, or the issuer's."""
        if self.webauthn_origins:
            return self.webauthn_origins
        issuer = urlsplit(self.issuer)
        return (f"{issuer.scheme}://{issuer.netloc}",)

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.claims_hook is not None and not _HOOK_PATH.fullmatch(self.claims_hook):
            raise ValueError("claims_hook: expected module.path:function")
        for role in self.default_roles:
            try:
                check_role_name(role)
            except InvalidRoleError as error:
                raise ValueError(f"default_roles: {error}") from None
        if self.signing_alg == "HS256":
            secret = self.hs256_secret.get_secret_value() if self.hs256_secret else ""
            if len(secret.encode()) < 32:
                raise ValueError("hs256_secret: HS256 needs a secret of at least 32 bytes")
        if self.secret_key is not None and len(self.secret_key.get_secret_value().encode()) < 32:
            raise ValueError("secret_key: must be at least 32 bytes")
        if self.refresh_reuse_interval >= self.refresh_ttl:
            raise ValueError("refresh_reuse_interval: must be shorter than refresh_ttl")
        for proxy in self.trusted_proxies:
            try:
                ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {proxy!r} is not an address or network"
                ) from None
        try:
            self.metrics_address  # noqa: B018 - validates
        except ValueError as error:
            raise ValueError(f"metrics_listen: {error}") from None
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path:
                raise ValueError(
                    f"allowed_origins: {origin!r} is not an origin like https://a.example"
                )
        if self.redis_url is not None and urlsplit(self.redis_url).scheme not in {
            "redis",
            "rediss",
        }:
            raise ValueError("redis_url: expected redis://host:port/db or rediss://...")
        shared_database = self.database_url is not None and not self.database_url.startswith(
            "sqlite"
        )
        if shared_database and self.secret_key is None:
            # Signing keys in a shared database are encrypted under it, and refresh tokens are
            # MACed with it: a per-machine secret file would split the instances.
            raise ValueError(
                "secret_key: a shared database needs TOKENWARD_SECRET_KEY, the same on every "
                "instance"
            )
        if self.cookie_samesite == "none" and not self.allowed_origins:
            raise ValueError(
                "cookie_samesite: none is for front-ends on another site; list them in "
                "TOKENWARD_ALLOWED_ORIGINS"
            )
        if self.cookie_host_prefix and not self.secure_cookie:
            raise ValueError(
                "cookie_host_prefix: browsers take a __Host- cookie only if Secure, which it is "
                "in production (TOKENWARD_ENV) or with TOKENWARD_COOKIE_SAMESITE=none"
            )
        self._check_mail()
        if self.env == "production":
            if "issuer" not in self.model_fields_set:
                raise ValueError(
                    "issuer: production needs TOKENWARD_ISSUER (this server's https URL)"
                )
            url = urlsplit(self.issuer)
            local = url.hostname in {"localhost", "127.0.0.1", "::1"}
            if url.scheme != "https" and not (url.scheme == "http" and local):
                raise ValueError("issuer: production needs an https:// issuer")
        return self

    def _check_mail(self) -> None:
        delivery = self.mail_delivery
        if delivery == "log" and self.production:
            raise ValueError(
                "email_delivery: log puts links in the log, which production must not do"
            )
        if delivery == "smtp":
            if not self.smtp_url:
                raise ValueError("smtp_url: email_delivery smtp needs TOKENWARD_SMTP_URL")
            from tokenward.infra.mail import SmtpTarget

            try:
                target = SmtpTarget.from_url(self.smtp_url)
            except ValueError as error:
                raise ValueError(f"smtp_url: {error}") from None
            local = target.host in {"localhost", "127.0.0.1", "::1"}
            if target.tls == "none" and not local:
                raise ValueError("smtp_url: ?tls=none only for a relay on loopback")
            if not self.email_from:
                raise ValueError("email_from: email_delivery smtp needs TOKENWARD_EMAIL_FROM")
            if not self.app_url:
                raise ValueError("app_url: mail needs TOKENWARD_APP_URL, where links point")
        if self.app_url is not None:
            url = urlsplit(self.app_url)
            if url.scheme not in {"http", "https"} or not url.netloc or url.query or url.fragment:
                raise ValueError(f"app_url: {self.app_url!r} is not a URL like https://a.example")
            if self.production and url.scheme != "https":
                raise ValueError("app_url: production needs an https:// app URL")
        if self.email_verification == "required" and delivery == "none":
            raise ValueError(
                "email_verification: required needs mail (TOKENWARD_EMAIL_DELIVERY smtp)"
            )

    @property
    def mail_delivery(self) -> Literal["smtp", "log", "none"]:
        if self.email_delivery is not None:
            return self.email_delivery
        return "none" if self.production else "log"

    @property
    def metrics_address(self) -> tuple[str, int]:
        """The metrics listener's host and port (ValueError unless ``host:port``)."""
        host, colon, port = self.metrics_listen.rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected host:port, got {self.metrics_listen!r}")
        return host, int(port)

    @property
    def log_output(self) -> Literal["json", "text"]:
        """The log format in force: the setting, or the environment's default."""
        if self.log_format is not None:
            return self.log_format
        return "json" if self.production else "text"

    @property
    def link_base(self) -> str:
        """Where mailed links point: the app URL, or the issuer (development)."""
        return (self.app_url or self.issuer).rstrip("/")

    @property
    def rate_limit_email_cooldown(self) -> str:
        return f"1/{int(self.email_resend_cooldown.total_seconds())} seconds"

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def serves_demo(self) -> bool:
        return self.demo_page if self.demo_page is not None else not self.production

    @property
    def serves_api_docs(self) -> bool:
        return self.api_docs if self.api_docs is not None else not self.production

    @property
    def secure_cookie(self) -> bool:
        # SameSite=None is refused by browsers without Secure.
        return self.production or self.cookie_samesite == "none"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'tokenward.db'}"

    @property
    def refresh_cookie_name(self) -> str:
        # The __Secure- prefix makes browsers refuse the cookie unless it came over HTTPS.
        # __Host- also binds it to this host and Path=/: no sibling subdomain can plant one.
        if self.cookie_host_prefix:
            return "__Host-tw_refresh"
        return "__Secure-tw_refresh" if self.production else "tw_refresh"


def _describe(error: Any) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part != "__root__"]
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc and ":" in message:  # model-level checks name their field first
        field, message = message.split(":", 1)
        loc = [field]
    name = ENV_PREFIX + loc[0].upper() if loc else "configuration"
    return f"{name}: {message.strip()}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise :class:`ConfigError` with one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("invalid setting " + _describe(exc.errors()[0])) from None
