"""Settings: durations, validation, and the one-line error that stops a bad start."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from support import free_port

from tokenward.exceptions import ConfigError
from tokenward.infra.config import load_settings, parse_duration

# Settings alone: the PostgreSQL run would repeat these unchanged.
pytestmark = pytest.mark.sqlite_only

TOKENWARD = str(Path(sys.executable).parent / "tokenward")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("900", 900), (900, 900), ("15m", 900), ("12h", 43200), ("7d", 604800), ("30s", 30)],
)
def test_durations_accept_seconds_and_units(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "15 minutes", "-5", "0", "1.5h", "7w", True])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"expected|longer than zero"):
        parse_duration(text)


def test_defaults() -> None:
    settings = load_settings(_env_file=None)
    assert settings.access_ttl == timedelta(minutes=15)
    assert settings.refresh_ttl == timedelta(days=7)
    assert settings.refresh_reuse_interval == timedelta(seconds=10)
    assert settings.signing_alg == "ES256"
    assert settings.env == "development"
    assert settings.sqlalchemy_url.startswith("sqlite+aiosqlite:///")
    assert settings.sqlalchemy_url.endswith("tokenward-data/tokenward.db")


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "TOKENWARD_REFRESH_TTL=12h\nTOKENWARD_ISSUER=https://a.example\n"
    )
    monkeypatch.setenv("TOKENWARD_ACCESS_TTL", "5m")
    settings = load_settings()
    assert settings.access_ttl == timedelta(minutes=5)
    assert settings.refresh_ttl == timedelta(hours=12)
    assert settings.issuer == "https://a.example"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TOKENWARD_ACCESS_TTL": "soon"}, "TOKENWARD_ACCESS_TTL"),
        ({"TOKENWARD_ENV": "staging"}, "TOKENWARD_ENV"),
        ({"TOKENWARD_SIGNING_ALG": "none"}, "TOKENWARD_SIGNING_ALG"),
        (
            {"TOKENWARD_SIGNING_ALG": "HS256", "TOKENWARD_HS256_SECRET": "short"},
            "TOKENWARD_HS256_SECRET",
        ),
        ({"TOKENWARD_REFRESH_REUSE_INTERVAL": "8d"}, "TOKENWARD_REFRESH_REUSE_INTERVAL"),
        ({"TOKENWARD_PASSWORD_MIN_LENGTH": "4"}, "TOKENWARD_PASSWORD_MIN_LENGTH"),
        ({"TOKENWARD_METRICS_LISTEN": "9464"}, "TOKENWARD_METRICS_LISTEN"),
        ({"TOKENWARD_METRICS_LISTEN": "127.0.0.1:http"}, "TOKENWARD_METRICS_LISTEN"),
        ({"TOKENWARD_METRICS_LISTEN": "127.0.0.1:70000"}, "TOKENWARD_METRICS_LISTEN"),
        ({"TOKENWARD_METRICS": "maybe"}, "TOKENWARD_METRICS"),
        (
            {"TOKENWARD_ENV": "production", "TOKENWARD_ISSUER": "http://auth.example"},
            "TOKENWARD_ISSUER",
        ),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^invalid setting {variable}: "):
        load_settings()


def test_serve_refuses_to_start_with_one_clear_line(tmp_path: Path) -> None:
    """The console script prints one line naming the variable and exits non-zero."""
    result = subprocess.run(
        [TOKENWARD, "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "TOKENWARD_ACCESS_TTL": "forever"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tokenward: invalid setting TOKENWARD_ACCESS_TTL: "
        "expected seconds or a number with s, m, h or d (e.g. 900, 15m, 7d)"
    ]


def test_production_requires_https_issuer_but_allows_localhost() -> None:
    assert load_settings(
        _env_file=None, env="production", issuer="http://localhost:8000"
    ).production
    assert load_settings(_env_file=None, env="production", issuer="https://auth.example").production


def test_samesite_none_needs_listed_origins() -> None:
    with pytest.raises(ConfigError, match="TOKENWARD_COOKIE_SAMESITE: none is for front-ends"):
        load_settings(cookie_samesite="none")
    assert load_settings(
        cookie_samesite="none", allowed_origins="https://app.other.example"
    ).secure_cookie


def test_the_demo_page_defaults_on_in_development_only() -> None:
    assert load_settings().serves_demo
    production = {"env": "production", "issuer": "https://auth.example.com"}
    assert not load_settings(**production).serves_demo
    assert load_settings(**production, demo_page=True).serves_demo


@pytest.mark.parametrize("text", ["0", "0s", "0m", 0])
def test_a_zero_reuse_interval_is_accepted(
    monkeypatch: pytest.MonkeyPatch, text: str | int
) -> None:
    """0 is the strict setting: any replay of a rotated-out refresh token is theft."""
    monkeypatch.setenv("TOKENWARD_REFRESH_REUSE_INTERVAL", str(text))
    assert load_settings(_env_file=None).refresh_reuse_interval == timedelta(0)
    assert load_settings(_env_file=None, refresh_reuse_interval=text).refresh_reuse_interval == (
        timedelta(0)
    )


@pytest.mark.parametrize(
    "variable", ["TOKENWARD_ACCESS_TTL", "TOKENWARD_REFRESH_TTL", "TOKENWARD_SESSION_MAX_AGE"]
)
def test_other_durations_still_refuse_zero(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "0s")
    with pytest.raises(ConfigError, match=f"^invalid setting {variable}: must be longer than zero"):
        load_settings(_env_file=None)


SMTP = {
    "email_delivery": "smtp",
    "smtp_url": "smtp://mailer:secret@smtp.example.com",
    "email_from": "Example <no-reply@example.com>",
    "app_url": "https://app.example.com",
}


def test_mail_goes_to_the_log_in_development_and_nowhere_in_production() -> None:
    assert load_settings(_env_file=None).mail_delivery == "log"
    production = load_settings(_env_file=None, env="production", issuer="https://auth.example.com")
    assert production.mail_delivery == "none"
    assert load_settings(_env_file=None).link_base == "http://127.0.0.1:8000"
    assert load_settings(_env_file=None, **SMTP).link_base == "https://app.example.com"


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({**SMTP, "smtp_url": None}, "TOKENWARD_SMTP_URL"),
        ({**SMTP, "email_from": None}, "TOKENWARD_EMAIL_FROM"),
        ({**SMTP, "app_url": None}, "TOKENWARD_APP_URL"),
        ({**SMTP, "smtp_url": "http://smtp.example.com"}, "TOKENWARD_SMTP_URL"),
        ({**SMTP, "smtp_url": "smtp://smtp.example.com?tls=none"}, "TOKENWARD_SMTP_URL"),
        ({**SMTP, "smtp_url": "smtps://smtp.example.com?tls=none"}, "TOKENWARD_SMTP_URL"),
        ({**SMTP, "app_url": "https://app.example.com/#x"}, "TOKENWARD_APP_URL"),
        (
            {"email_delivery": "none", "email_verification": "required"},
            "TOKENWARD_EMAIL_VERIFICATION",
        ),
        (
            {"env": "production", "issuer": "https://a.example", "email_delivery": "log"},
            "TOKENWARD_EMAIL_DELIVERY",
        ),
    ],
)
def test_mail_settings_that_cannot_work_stop_the_start(
    overrides: dict[str, object], variable: str
) -> None:
    """A mail setup that would lose mail, leak links or send cleartext off the machine is
    refused at start with one line naming the variable."""
    with pytest.raises(ConfigError, match=f"^invalid setting {variable}:"):
        load_settings(_env_file=None, **overrides)


def test_a_plain_text_relay_is_allowed_on_loopback_only() -> None:
    settings = load_settings(
        _env_file=None, **{**SMTP, "smtp_url": "smtp://127.0.0.1:2525?tls=none"}
    )
    assert settings.mail_delivery == "smtp"


PASSKEYS = {"passkeys": "passwordless", "webauthn_rp_id": "example.com"}


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"passkeys": "passwordless"}, "TOKENWARD_WEBAUTHN_RP_ID"),
        ({**PASSKEYS, "webauthn_rp_id": "127.0.0.1"}, "TOKENWARD_WEBAUTHN_RP_ID"),
        ({**PASSKEYS, "webauthn_rp_id": "https://example.com"}, "TOKENWARD_WEBAUTHN_RP_ID"),
        ({**PASSKEYS, "webauthn_origins": "https://evil.example"}, "TOKENWARD_WEBAUTHN_ORIGINS"),
        ({**PASSKEYS, "webauthn_origins": "http://app.example.com"}, "TOKENWARD_WEBAUTHN_ORIGINS"),
        ({**PASSKEYS, "webauthn_origins": "https://example.com/app"}, "TOKENWARD_WEBAUTHN_ORIGINS"),
    ],
)
def test_passkey_settings_that_cannot_work_stop_the_start(
    overrides: dict[str, object], variable: str
) -> None:
    """The RP id is a domain from the settings (never a request's Host); every origin is an
    exact origin within it, https but on localhost."""
    with pytest.raises(ConfigError, match=f"^invalid setting {variable}:"):
        load_settings(_env_file=None, **overrides)


def test_passkey_origins_default_to_the_issuers() -> None:
    settings = load_settings(
        _env_file=None, **{**PASSKEYS, "issuer": "https://id.example.com/tenant"}
    )
    assert settings.webauthn_allowed_origins == ("https://id.example.com",)
    listed = load_settings(
        _env_file=None,
        **{**PASSKEYS, "webauthn_origins": "https://example.com,https://app.example.com"},
    )
    assert listed.webauthn_allowed_origins == ("https://example.com", "https://app.example.com")


def test_logs_are_json_in_production_and_text_in_development() -> None:
    """TOKENWARD_LOG_FORMAT follows the environment unless set; the level is case-blind."""
    production = {"env": "production", "issuer": "https://auth.example"}
    assert load_settings(_env_file=None).log_output == "text"
    assert load_settings(_env_file=None, **production).log_output == "json"
    assert load_settings(_env_file=None, log_format="json").log_output == "json"
    assert load_settings(_env_file=None, log_format="text", **production).log_output == "text"
    assert load_settings(_env_file=None, log_level="WARNING").log_level == "warning"
    assert load_settings(_env_file=None).log_level == "info"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TOKENWARD_LOG_FORMAT", "xml"), ("TOKENWARD_LOG_LEVEL", "verbose")],
)
def test_a_bad_log_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings(_env_file=None)


def test_the_metrics_listener_defaults_to_loopback() -> None:
    settings = load_settings(_env_file=None)
    assert not settings.metrics
    assert settings.metrics_address == ("127.0.0.1", 9464)
    assert load_settings(_env_file=None, metrics="on").metrics
    assert load_settings(_env_file=None, metrics_listen="[::1]:9100").metrics_address == (
        "::1",
        9100,
    )


def test_serve_refuses_a_metrics_port_in_use_with_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [TOKENWARD, "serve", "--port", str(free_port())],
            env={
                "PATH": "/usr/bin:/bin",
                "TOKENWARD_DATA_DIR": str(tmp_path / "data"),
                "TOKENWARD_METRICS": "on",
                "TOKENWARD_METRICS_LISTEN": f"127.0.0.1:{port}",
                "TOKENWARD_LOG_LEVEL": "warning",
                **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"tokenward: metrics_listen: cannot listen on 127.0.0.1:{port} (")
