"""The operator's CLI, through the real console script, beside a running app on the same data."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pyotp
import pytest
from support import PASSWORD, TOKENWARD, Api, FakeClock, acli, cli, ok, refresh_cookie


async def test_users_create_list_disable_enable(api: Api, data_dir: Path) -> None:
    """An operator-made user logs in; disabling ends its sessions at once and refuses login."""
    out = ok(
        await acli(
            data_dir,
            "users",
            "create",
            "Ops@Example.com",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
    )
    assert out.startswith("created user ops@example.com (")
    assert PASSWORD not in out
    login = await api.login("ops@example.com")
    assert login.status_code == 200
    access, refresh = login.json()["access_token"], refresh_cookie(login)

    listing = ok(await acli(data_dir, "users", "list"))
    assert "ops@example.com" in listing
    assert "active\t1 live sessions" in listing
    assert "$argon2" not in listing

    assert ok(await acli(data_dir, "users", "disable", "ops@example.com")).strip() == (
        "disabled ops@example.com; ended 1 sessions"
    )
    assert (await api.me(access)).status_code == 401
    assert (await api.refresh(refresh)).status_code == 401
    assert (await api.login("ops@example.com")).status_code == 401
    assert "disabled\t0 live sessions" in ok(await acli(data_dir, "users", "list"))

    assert (
        ok(await acli(data_dir, "users", "enable", "ops@example.com")).strip()
        == "enabled ops@example.com"
    )
    assert (await api.login("ops@example.com")).status_code == 200


def test_users_create_applies_the_password_policy(data_dir: Path) -> None:
    result = cli(
        data_dir, "users", "create", "ops@example.com", "--password-stdin", stdin="short\n"
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "tokenward: password must be at least 15 characters"


async def test_sessions_list_and_revoke(api: Api, data_dir: Path) -> None:
    _, first = await api.signed_up()
    second = refresh_cookie(
        await api.login("ada@example.com", headers={"User-Agent": "curl/8.5.0"})
    )
    lines = ok(await acli(data_dir, "sessions", "list", "ada@example.com")).splitlines()
    assert lines[-1] == "2 live sessions"
    curl_line = next(line for line in lines if "\tcurl\t" in line)
    session_id = curl_line.split("\t")[0]

    out = ok(await acli(data_dir, "sessions", "revoke", "ada@example.com", "--session", session_id))
    assert out.strip() == "revoked 1 sessions of ada@example.com"
    assert (await api.refresh(second)).status_code == 401
    assert (await api.refresh(first)).status_code == 200

    again = await acli(data_dir, "sessions", "revoke", "ada@example.com", "--session", session_id)
    assert again.returncode == 1
    assert "has no live session" in again.stderr

    assert ok(await acli(data_dir, "sessions", "revoke", "ada@example.com")).strip() == (
        "revoked 1 sessions of ada@example.com"
    )
    assert (
        ok(await acli(data_dir, "sessions", "list", "ada@example.com")).strip() == "0 live sessions"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("users", "disable", "ghost@example.com"),
        ("users", "enable", "ghost@example.com"),
        ("sessions", "list", "ghost@example.com"),
        ("sessions", "revoke", "ghost@example.com"),
        ("sessions", "revoke", "not an email"),
        ("events", "--user", "ghost@example.com"),
    ],
)
def test_unknown_user_exits_non_zero_with_a_clear_message(
    data_dir: Path, args: tuple[str, ...]
) -> None:
    result = cli(data_dir, *args)
    assert result.returncode == 1
    assert result.stderr.startswith("tokenward: no user with email ")
    assert result.stdout == ""


async def test_events_show_reuse_detection_to_the_operator(
    api: Api, data_dir: Path, clock: FakeClock
) -> None:
    _, stolen = await api.signed_up()
    await api.refresh(stolen)
    clock.advance(20)
    assert (await api.refresh(stolen, headers={"User-Agent": "evil-bot/1.0"})).status_code == 401
    lines = ok(await acli(data_dir, "events", "--user", "ada@example.com")).splitlines()
    reuse = [line for line in lines if "\tsession.reuse_detected\t" in line]
    assert len(reuse) == 1
    assert "ua=evil-bot/1.0" in reuse[0]
    assert '"rotated_seconds_ago":20.0' in reuse[0]
    assert stolen not in "\n".join(lines)
    assert [line.split("\t")[1] for line in lines] == [
        "user.registered",
        "login.succeeded",
        "session.refreshed",
        "session.reuse_detected",
    ]


async def test_events_print_user_controlled_text_escaped_one_event_per_line(
    api: Api, service: Any, data_dir: Path
) -> None:
    """Issue 13: a User-Agent with tabs, newlines, escape sequences, C0/C1 controls or U+2028
    can neither add a column or a row to `tokenward events` nor reach the terminal raw."""
    from tokenward.core.events import ClientInfo

    assert (await api.register("ada@example.com")).status_code == 201
    # Over HTTP: header bytes, which the server decodes as latin-1 (so \x85 and \x9b are C1).
    over_http = b"bot\t1.0\tip=10.0.0.1 \x1b[31mred\x1b[0m \x85\x9b2J \x7f\\end"
    login = await api.login("ada@example.com", headers={"User-Agent": over_http})
    assert login.status_code == 200
    # What no HTTP client sends, straight to the service: CR/LF, NUL, U+2028/2029, bidi.
    direct = "a\nb\rc\x00d\x08e\x0bf\x0cg\x1ch\u2028i\u2029j\u202ek\u0085l\u200bm"
    await service.sessions.login("ada@example.com", PASSWORD, ClientInfo("203.0.113.9", direct))

    out = ok(await acli(data_dir, "events", "--user", "ada@example.com"))
    assert all(char.isprintable() or char in "\t\n" for char in out), repr(out)
    lines = out.split("\n")
    assert lines.pop() == ""
    assert [line.split("\t")[1] for line in lines] == [
        "user.registered",
        "login.succeeded",
        "login.succeeded",
    ]
    assert all(len(line.split("\t")) == 7 for line in lines), lines
    assert lines[1].split("\t")[5] == (
        "ua=bot\\t1.0\\tip=10.0.0.1 \\x1b[31mred\\x1b[0m \\x85\\x9b2J \\x7f\\\\end"
    )
    # NUL is stored as U+FFFD (PostgreSQL text cannot hold NUL), which prints as itself.
    assert lines[2].split("\t")[5] == (
        "ua=a\\nb\\rc\ufffdd\\x08e\\x0bf\\x0cg\\x1ch\\u2028i\\u2029j\\u202ek\\x85l\\u200bm"
    )


async def test_events_follow_prints_new_events_as_they_come(api: Api, data_dir: Path) -> None:
    await api.register("ada@example.com")
    process = await asyncio.create_subprocess_exec(
        TOKENWARD,
        "events",
        "--follow",
        env={**os.environ, "TOKENWARD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"\tuser.registered\t" in first
        await api.login("ada@example.com", "a wrong password, surely")
        second = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"\tlogin.failed\t" in second
    finally:
        process.terminate()
        await process.wait()


def test_db_prune_reports_what_it_removed(data_dir: Path) -> None:
    assert ok(cli(data_dir, "db", "prune")).strip() == "pruned 0 sessions and 0 events"


async def test_prune_removes_ended_sessions_and_old_events(
    api: Api, service: Any, clock: FakeClock
) -> None:
    """Tables stay bounded by live sessions, not by history."""
    from tokenward.app.operators import Admin

    _, ended = await api.signed_up()
    await api.logout(ended)
    _, live = await api.signed_up("grace@example.com")
    clock.advance(2 * 86400)
    report = await Admin(service).prune()
    assert report.sessions == 1
    assert report.events == 0
    assert (await api.refresh(live)).status_code == 200
    clock.advance(91 * 86400)
    report = await Admin(service).prune()
    assert report.sessions == 1  # the live one expired long ago (7 days idle)
    assert report.events > 0


async def test_a_session_ended_by_another_process_is_refused_at_once(
    api: Api, data_dir: Path
) -> None:
    """However often /auth/me accepted a token, the next request after a revoke elsewhere
    (here the operator's CLI, a separate process) is refused."""
    access, _ = await api.signed_up("cached@example.com")
    for _ in range(3):
        assert (await api.me(access)).status_code == 200
    ok(await acli(data_dir, "sessions", "revoke", "cached@example.com"))
    assert (await api.me(access)).status_code == 401


async def test_users_reset_mfa_removes_every_second_factor(
    api: Api, data_dir: Path, clock: FakeClock
) -> None:
    """A user who lost their phone and their recovery codes: the operator removes the
    factors; the next sign-in asks for the password alone."""
    access, _ = await api.signed_up()
    bearer = {"Authorization": f"Bearer {access}"}
    started = (await api.http.post("/auth/mfa/totp/enroll", headers=bearer)).json()
    code = pyotp.TOTP(started["secret"]).at(clock.time())
    confirm = {"factor_id": started["factor_id"], "code": code}
    assert (
        await api.http.post("/auth/mfa/totp/confirm", json=confirm, headers=bearer)
    ).status_code == 200
    assert (await api.login("ada@example.com")).json()["mfa_required"] is True

    out = ok(await acli(data_dir, "users", "reset-mfa", "ada@example.com"))
    assert out.strip() == "removed 1 second factors of ada@example.com"
    assert "access_token" in (await api.login("ada@example.com")).json()
    assert started["secret"] not in out
