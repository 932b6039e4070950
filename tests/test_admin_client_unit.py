"""The admin client's sans-IO layer: what each call sends, and what each answer becomes.

No network and no fake server: a :class:`Call` is a value, and :meth:`Call.read` takes a
status, headers and bytes. The clients that send calls are exercised against a real server in
the integration tests.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

import tokenward.admin
from tokenward.admin import (
    AdminClient,
    AdminError,
    AdminEvent,
    AdminSession,
    AdminUser,
    AsyncAdminClient,
    Role,
    UserPage,
)
from tokenward.admin import _calls as calls
from tokenward.admin._calls import Call
from tokenward.exceptions import TokenwardError

pytestmark = pytest.mark.sqlite_only  # no database at all

SECRET = "s3cr:et%/+ é"
PROBLEM = {"content-type": "application/problem+json"}
JSON = {"content-type": "application/json"}

USER: dict[str, Any] = {
    "id": "u-1",
    "email": "ada@example.com",
    "created_at": "2025-01-02T03:04:05Z",
    "email_verified": True,
    "disabled": False,
    "roles": ["editor", "billing"],
    "scope": "posts:write  invoices:read",
    "app_metadata": {"plan": "pro"},
    "user_metadata": {},
    "added_by_a_newer_server": 1,
}
SESSION = {
    "id": "s-1",
    "created_at": "2025-01-02T03:04:05+02:00",
    "last_used_at": "2025-01-02T04:00:00Z",
    "expires_at": "2025-02-01T00:00:00Z",
    "device": "Firefox on Linux",
    "ip": None,
}
EVENT = {
    "id": 42,
    "at": "2025-01-02T03:04:05.123456Z",
    "type": "signin",
    "session_id": "s-1",
    "ip": "192.0.2.1",
    "user_agent": None,
    "detail": None,
}
ROLE = {"name": "editor", "permissions": ["posts:write"], "created_at": "2025-01-02T03:04:05Z"}


def ok(call: Call[Any], body: Any, status: int = 200) -> Any:
    """What ``call`` returns for a 2xx answer with the JSON ``body`` (None: no body)."""
    content = b"" if body is None else json.dumps(body).encode()
    return call.read(status, JSON if content else {}, content)


def problem(code: str, status: int, **extra: Any) -> bytes:
    body = {"type": f"urn:tokenward:problem:{code}", "title": code.title(), "status": status}
    return json.dumps({**body, **extra}).encode()


def refused(call: Call[Any], status: int, headers: dict[str, str], content: bytes) -> AdminError:
    with pytest.raises(AdminError) as caught:
        call.read(status, headers, content)
    return caught.value


# -- what is sent ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "method", "path", "params", "body"),
    [
        (calls.list_users(), "GET", "/admin/users", {"limit": "50"}, None),
        (
            calls.list_users(limit=200, cursor="c:1", email_prefix="ada"),
            "GET",
            "/admin/users",
            {"limit": "200", "cursor": "c:1", "email_prefix": "ada"},
            None,
        ),
        (calls.get_user("u-1"), "GET", "/admin/users/u-1", {}, None),
        (calls.delete_user("u-1"), "DELETE", "/admin/users/u-1", {}, None),
        (calls.disable_user("u-1"), "POST", "/admin/users/u-1/disable", {}, None),
        (calls.enable_user("u-1"), "POST", "/admin/users/u-1/enable", {}, None),
        (
            calls.set_app_metadata("u-1", {"plan": "pro", "seats": 3}),
            "PUT",
            "/admin/users/u-1/app_metadata",
            {},
            {"plan": "pro", "seats": 3},
        ),
        (calls.set_app_metadata("u-1", {}), "PUT", "/admin/users/u-1/app_metadata", {}, {}),
        (
            calls.grant_role("u-1", "editor"),
            "PUT",
            "/admin/users/u-1/roles/editor",
            {"end_sessions": "false"},
            None,
        ),
        (
            calls.revoke_role("u-1", "editor", end_sessions=True),
            "DELETE",
            "/admin/users/u-1/roles/editor",
            {"end_sessions": "true"},
            None,
        ),
        (calls.list_sessions("u-1"), "GET", "/admin/users/u-1/sessions", {}, None),
        (calls.revoke_sessions("u-1"), "DELETE", "/admin/users/u-1/sessions", {}, None),
        (calls.revoke_session("u-1", "s-9"), "DELETE", "/admin/users/u-1/sessions/s-9", {}, None),
        (calls.user_events("u-1"), "GET", "/admin/users/u-1/events", {"limit": "50"}, None),
        (calls.user_events("u-1", limit=5), "GET", "/admin/users/u-1/events", {"limit": "5"}, None),
        (calls.list_roles(), "GET", "/admin/roles", {}, None),
        (calls.put_role("editor"), "PUT", "/admin/roles/editor", {}, {"permissions": []}),
        (
            calls.put_role("editor", (p for p in ["posts:write", "posts:read"])),
            "PUT",
            "/admin/roles/editor",
            {},
            {"permissions": ["posts:write", "posts:read"]},
        ),
        (calls.delete_role("old"), "DELETE", "/admin/roles/old", {"end_sessions": "false"}, None),
        (
            calls.delete_role("old", end_sessions=True),
            "DELETE",
            "/admin/roles/old",
            {"end_sessions": "true"},
            None,
        ),
    ],
)
def test_each_call_sends_its_method_path_query_and_body(
    call: Call[Any], method: str, path: str, params: dict[str, str], body: Any
) -> None:
    """Every endpoint of the contract, as the call that describes it."""
    assert (call.method, call.path, call.params, call.json) == (method, path, params, body)


def test_create_user_sends_only_the_members_given() -> None:
    """Absent optional members are left out of the body; email_verified is always explicit."""
    assert calls.create_user("ada@example.com").json == {
        "email": "ada@example.com",
        "email_verified": False,
    }
    call = calls.create_user(
        "ada@example.com",
        password="correct horse",
        email_verified=True,
        app_metadata={"plan": "pro"},
        roles=("editor",),
        send_invitation=False,
    )
    assert (call.method, call.path, call.params) == ("POST", "/admin/users", {})
    assert call.json == {
        "email": "ada@example.com",
        "password": "correct horse",
        "email_verified": True,
        "app_metadata": {"plan": "pro"},
        "roles": ["editor"],
        "send_invitation": False,
    }


def test_path_segments_are_percent_encoded() -> None:
    """A "/" or "?" in an id stays inside its segment instead of changing the route."""
    assert calls.get_user("a/b?c d").path == "/admin/users/a%2Fb%3Fc%20d"
    assert calls.grant_role("ü", "x/y").path == "/admin/users/%C3%BC/roles/x%2Fy"
    assert calls.revoke_session("u", "s/../1").path == "/admin/users/u/sessions/s%2F..%2F1"
    assert calls.delete_role("a b").path == "/admin/roles/a%20b"


@pytest.mark.parametrize("segment", ["", ".", ".."])
def test_segments_that_would_move_the_path_are_refused(segment: str) -> None:
    """``revoke_role(user, "..")`` would resolve to DELETE of the user itself."""
    with pytest.raises(ValueError, match="non-empty"):
        calls.revoke_role("u-1", segment)
    with pytest.raises(ValueError, match="user_id"):
        calls.delete_user(segment)
    with pytest.raises(ValueError, match="session_id"):
        calls.revoke_session("u-1", segment)
    with pytest.raises(ValueError, match="name"):
        calls.put_role(segment, ["x"])


def test_one_string_is_not_taken_for_a_list_of_names() -> None:
    """``put_role("r", "posts:write")`` would otherwise grant one permission per letter."""
    with pytest.raises(TypeError, match="permissions"):
        calls.put_role("editor", "posts:write")
    with pytest.raises(TypeError, match="roles"):
        calls.create_user("ada@example.com", roles="editor")


def test_a_password_in_a_body_stays_out_of_the_repr() -> None:
    call = calls.create_user("ada@example.com", password="correct horse")
    assert "correct horse" not in repr(call)
    assert "ada@example.com" not in repr(call)
    assert "POST" in repr(call)


# -- credentials -------------------------------------------------------------------------


def test_basic_credentials_are_form_encoded_before_base64() -> None:
    """RFC 6749 2.3.1: a ":" in the secret must not end the id; tokenward unquotes each part."""
    header = calls.basic_authorization("ops:bot", SECRET)
    scheme, _, encoded = header.partition(" ")
    assert scheme == "Basic"
    pair = base64.b64decode(encoded, validate=True).decode("ascii")
    client_id, secret = pair.split(":")  # exactly one ":" survives the encoding
    assert (unquote(client_id), unquote(secret)) == ("ops:bot", SECRET)


def test_http_options_carry_the_credentials_and_check_the_arguments() -> None:
    options = calls.http_options("https://auth.example.com", "ops", SECRET, 3.0)
    assert options["base_url"] == "https://auth.example.com"
    assert options["timeout"] == 3.0
    assert options["headers"]["Authorization"] == calls.basic_authorization("ops", SECRET)
    with pytest.raises(ValueError, match="base_url"):
        calls.http_options("auth.example.com", "ops", SECRET, 3.0)
    with pytest.raises(ValueError, match="required"):
        calls.http_options("https://auth.example.com", "ops", "", 3.0)


async def test_the_secret_is_in_no_repr_or_str() -> None:
    """Neither the secret nor its base64 form leaks through the clients' repr or str."""
    encoded = calls.basic_authorization("ops", SECRET).split()[1]
    sync = AdminClient("https://auth.example.com", "ops", SECRET)
    asynchronous = AsyncAdminClient("https://auth.example.com", "ops", SECRET)
    try:
        for client in (sync, asynchronous):
            for text in (repr(client), str(client)):
                assert "ops" in text
                assert SECRET not in text
                assert encoded not in text
    finally:
        sync.close()
        await asynchronous.aclose()


# -- what comes back ---------------------------------------------------------------------


def test_a_user_is_read_with_aware_times_tuples_and_a_split_scope() -> None:
    user = ok(calls.get_user("u-1"), USER)
    assert user == AdminUser(
        id="u-1",
        email="ada@example.com",
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        email_verified=True,
        disabled=False,
        roles=("editor", "billing"),
        scope=("posts:write", "invoices:read"),
        app_metadata={"plan": "pro"},
        user_metadata={},
    )
    assert user.created_at.tzinfo is UTC
    assert hash(user) == hash(ok(calls.get_user("u-1"), USER))  # metadata left out of the hash
    assert ok(calls.set_app_metadata("u-1", {"plan": "pro"}), USER) == user
    assert ok(calls.create_user("ada@example.com"), USER, status=201) == user


def test_an_empty_scope_is_an_empty_tuple() -> None:
    assert ok(calls.get_user("u-1"), {**USER, "scope": ""}).scope == ()


def test_a_page_of_users_and_the_next_call() -> None:
    """The walk of iter_users: the next call carries the page's cursor, the last page ends it."""
    first = calls.list_users(limit=2, email_prefix="ada")
    page = ok(first, {"users": [USER, USER], "next_cursor": "c2"})
    assert isinstance(page, UserPage)
    assert len(page.users) == 2
    assert page.next_cursor == "c2"
    second = calls.next_page(first, page)
    assert second is not None
    assert second.params == {"limit": "2", "email_prefix": "ada", "cursor": "c2"}
    assert (second.method, second.path) == (first.method, first.path)
    last = ok(second, {"users": [], "next_cursor": None})
    assert last == UserPage(users=(), next_cursor=None)
    assert calls.next_page(second, last) is None


def test_a_cursor_that_does_not_move_ends_the_walk() -> None:
    """A server that hands back the same cursor would otherwise be walked forever."""
    call = calls.list_users(cursor="c2")
    page = ok(call, {"users": [], "next_cursor": "c2"})
    with pytest.raises(AdminError) as caught:
        calls.next_page(call, page)
    assert caught.value.problem == "invalid-response"


def test_sessions_events_and_roles_are_read() -> None:
    [session] = ok(calls.list_sessions("u-1"), {"sessions": [SESSION]})
    assert session == AdminSession(
        id="s-1",
        created_at=datetime(2025, 1, 2, 1, 4, 5, tzinfo=UTC),  # +02:00 moved to UTC
        last_used_at=datetime(2025, 1, 2, 4, 0, tzinfo=UTC),
        expires_at=datetime(2025, 2, 1, tzinfo=UTC),
        device="Firefox on Linux",
        ip=None,
    )
    assert session.created_at.tzinfo is UTC
    [event] = ok(calls.user_events("u-1"), {"events": [EVENT, {**EVENT, "detail": {"a": 1}}]})[:1]
    assert event == AdminEvent(
        id=42,
        at=datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        type="signin",
        session_id="s-1",
        ip="192.0.2.1",
        user_agent=None,
        detail=None,
    )
    assert ok(calls.user_events("u-1"), {"events": [{**EVENT, "detail": {"a": 1}}]})[0].detail == {
        "a": 1
    }
    role = Role("editor", ("posts:write",), datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert ok(calls.list_roles(), {"roles": [ROLE]}) == [role]
    assert ok(calls.put_role("editor", ["posts:write"]), ROLE, status=201) == role
    assert ok(calls.put_role("editor", ["posts:write"]), ROLE, status=200) == role
    assert ok(calls.list_sessions("u-1"), {"sessions": []}) == []


def test_counts_and_no_content() -> None:
    assert ok(calls.disable_user("u-1"), {"sessions_ended": 3}) == 3
    assert ok(calls.revoke_sessions("u-1"), {"ended": 0}) == 0
    for call in (
        calls.delete_user("u-1"),
        calls.enable_user("u-1"),
        calls.grant_role("u-1", "r"),
        calls.revoke_role("u-1", "r"),
    ):
        assert ok(call, None, status=204) is None
    assert ok(calls.revoke_session("u-1", "s-1"), None, status=204) is True
    assert ok(calls.delete_role("r"), None, status=204) is True


def test_not_found_is_false_for_the_calls_that_say_so() -> None:
    """revoke_session and delete_role answer False on 404 not-found; other errors still raise."""
    gone = problem("not-found", 404)
    assert calls.revoke_session("u-1", "s-1").read(404, PROBLEM, gone) is False
    assert calls.delete_role("r").read(404, PROBLEM, gone) is False
    # A 404 that is not tokenward's problem+json (a proxy, a server without the admin API)
    error = refused(calls.revoke_session("u-1", "s-1"), 404, {"content-type": "text/html"}, b"")
    assert (error.status, error.problem) == (404, "http-error")
    error = refused(calls.delete_role("r"), 403, PROBLEM, problem("insufficient-scope", 403))
    assert error.problem == "insufficient-scope"
    # and elsewhere a 404 is an error
    assert refused(calls.get_user("u-1"), 404, PROBLEM, gone).problem == "not-found"
    assert refused(calls.revoke_role("u-1", "r"), 404, PROBLEM, gone).problem == "not-found"


# -- errors ------------------------------------------------------------------------------


def test_a_problem_answer_becomes_an_admin_error_with_its_members() -> None:
    body = problem("insufficient-scope", 403, detail="needs admin:roles", scope="admin:roles")
    error = refused(calls.put_role("r", ["p"]), 403, PROBLEM, body)
    assert isinstance(error, TokenwardError)
    assert (error.status, error.problem, error.title) == (
        403,
        "insufficient-scope",
        "Insufficient-Scope",
    )
    assert error.detail == "needs admin:roles"
    assert error.retry_after is None
    assert error.extra() == {"scope": "admin:roles"}
    assert error.public_detail() == "needs admin:roles"
    assert str(error) == (
        "PUT /admin/roles/r answered 403 insufficient-scope: Insufficient-Scope (needs admin:roles)"
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "invalid-client"),
        (409, "email-taken"),
        (422, "weak-password"),
        (422, "invalid-request"),
        (400, "invalid-cursor"),
    ],
)
def test_each_problem_code_is_carried(status: int, code: str) -> None:
    error = refused(calls.create_user("a@example.com"), status, PROBLEM, problem(code, status))
    assert (error.status, error.problem, error.detail) == (status, code, None)


@pytest.mark.parametrize(("status", "code"), [(429, "rate-limited"), (503, "unavailable")])
def test_retry_after_is_read_whatever_the_header_case(status: int, code: str) -> None:
    for name in ("Retry-After", "retry-after"):
        headers = {"Content-Type": "application/problem+json; charset=utf-8", name: " 7 "}
        error = refused(calls.list_roles(), status, headers, problem(code, status))
        assert (error.problem, error.retry_after) == (code, 7)
        assert error.headers() == {"Retry-After": "7"}


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2025 07:28:00 GMT", "-1", "1.5", "", "²"])
def test_a_retry_after_that_is_not_seconds_is_none(value: str) -> None:
    headers = {**PROBLEM, "Retry-After": value}
    assert (
        refused(calls.list_roles(), 429, headers, problem("rate-limited", 429)).retry_after is None
    )


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"content-type": "text/html"}, b"<h1>Bad gateway</h1>"),
        ({}, b""),
        (PROBLEM, b"not json"),
        (PROBLEM, b"[1, 2]"),
        (PROBLEM, json.dumps({"type": "about:blank", "title": "Bad Gateway"}).encode()),
        (PROBLEM, json.dumps({"type": "urn:tokenward:problem:"}).encode()),
        (PROBLEM, b"[" * 100_000),
    ],
)
def test_an_answer_that_is_not_tokenwards_problem_is_an_http_error(
    headers: dict[str, str], content: bytes
) -> None:
    error = refused(calls.list_roles(), 502, headers, content)
    assert (error.status, error.problem, error.title, error.detail) == (
        502,
        "http-error",
        "Bad Gateway",
        None,
    )


def test_a_redirect_is_an_error_too() -> None:
    """Redirects are not followed (the credentials stay with base_url): a 3xx raises."""
    error = refused(calls.list_roles(), 307, {"location": "https://elsewhere"}, b"")
    assert (error.status, error.problem, error.title) == (307, "http-error", "Temporary Redirect")
    assert refused(calls.list_roles(), 599, {}, b"").title == "HTTP error"


def test_error_messages_hold_no_request_body() -> None:
    """A weak-password answer names the rule, never the password sent."""
    call = calls.create_user("ada@example.com", password="hunter2-secret")
    body = problem("weak-password", 422, detail="too short", rule="min_length")
    error = refused(call, 422, PROBLEM, body)
    assert "hunter2-secret" not in str(error)
    assert "hunter2-secret" not in repr(error)
    assert error.extra() == {"rule": "min_length"}


@pytest.mark.parametrize(
    ("body", "member"),
    [
        ({**USER, "email": None}, "email"),
        ({**USER, "disabled": 0}, "disabled"),
        ({**USER, "roles": "editor"}, "roles"),
        ({**USER, "roles": [1]}, "roles"),
        ({**USER, "scope": ["a"]}, "scope"),
        ({**USER, "created_at": "yesterday"}, "created_at"),
        ({**USER, "created_at": "2025-01-02T03:04:05"}, "created_at"),  # no offset
        ({**USER, "app_metadata": None}, "app_metadata"),
        ({k: v for k, v in USER.items() if k != "user_metadata"}, "user_metadata"),
        (["not", "an", "object"], "user"),
    ],
)
def test_a_2xx_that_breaks_the_contract_is_an_invalid_response(body: Any, member: str) -> None:
    error = refused(calls.get_user("u-1"), 200, JSON, json.dumps(body).encode())
    assert (error.status, error.problem) == (200, "invalid-response")
    assert error.detail is not None
    assert error.detail.startswith(member)


@pytest.mark.parametrize(
    ("call", "body"),
    [
        (calls.disable_user("u"), {"sessions_ended": True}),
        (calls.disable_user("u"), {"sessions_ended": -1}),
        (calls.revoke_sessions("u"), {}),
        (calls.list_users(), {"users": [USER]}),  # next_cursor missing, not null
        (calls.list_sessions("u"), {"sessions": [{**SESSION, "ip": 1}]}),
        (calls.user_events("u"), {"events": [{**EVENT, "id": "42"}]}),
        (calls.user_events("u"), {"events": [{**EVENT, "detail": []}]}),
        (calls.list_roles(), {"roles": None}),
    ],
)
def test_other_broken_answers_are_invalid_responses(call: Call[Any], body: Any) -> None:
    assert refused(call, 200, JSON, json.dumps(body).encode()).problem == "invalid-response"


def test_a_2xx_that_is_not_json_is_an_invalid_response() -> None:
    for content in (b"<html>", b"[" * 100_000):
        assert refused(calls.get_user("u"), 200, JSON, content).problem == "invalid-response"


# -- the package -------------------------------------------------------------------------


def test_both_clients_have_the_same_methods() -> None:
    """The async client is the sync one awaited: same names, same signatures."""

    def methods(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if inspect.isfunction(member) and not name.startswith("_") and name != "close"
        }

    sync, asynchronous = methods(AdminClient), methods(AsyncAdminClient)
    asynchronous.pop("aclose")
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        other = asynchronous[name]
        assert signature.parameters.keys() == other.parameters.keys(), name
        assert [p.default for p in signature.parameters.values()] == [
            p.default for p in other.parameters.values()
        ], name
        member = getattr(AsyncAdminClient, name)
        assert inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member), name
    expected = {
        "list_users", "iter_users", "create_user", "get_user", "delete_user", "disable_user",
        "enable_user", "set_app_metadata", "grant_role", "revoke_role", "list_sessions",
        "revoke_sessions", "revoke_session", "user_events", "list_roles", "put_role",
        "delete_role", "reset_factors",
    }  # fmt: skip
    assert sync.keys() == expected


def test_the_package_imports_only_the_stdlib_httpx_and_the_root_error() -> None:
    """It ships in the base install: nothing of the server may be imported."""
    package = Path(tokenward.admin.__file__).parent
    imported: set[str] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names
        and name != "httpx"
        and name != "tokenward.exceptions"
        and not (name == "tokenward.admin" or name.startswith("tokenward.admin."))
    }
    assert outside == set()
