"""The sync admin client (``tokenward.admin.AdminClient``) against a real ``tokenward serve``
process, with credentials made by the real CLI (``tokenward clients create NAME --scope``), as
an operator sets up a back office: every method once over real HTTP, paging, refusals, and
neither the secret nor a password in any message or in the server's log.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support import PASSWORD, cli, ok, refresh_cookie, server_process

from tokenward.admin import AdminClient, AdminError

WEAK = "tiny secret"


def credentials(data_dir: Path, name: str, *scopes: str) -> tuple[str, str]:
    """(client_id, client_secret) from ``tokenward clients create NAME --scope ...``."""
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    out = ok(cli(data_dir, "clients", "create", name, *args))
    found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return found["client_id"], found["client_secret"]


def refused(call: object, *args: object, **kwargs: object) -> AdminError:
    assert callable(call)
    with pytest.raises(AdminError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_every_method_against_tokenward_serve(tmp_path: Path) -> None:
    """A back office made with the CLI drives every admin operation of a real server: the
    answers are the typed values, the changes are real for the users (login, roles in the
    token, sessions ending), refusals carry the problem codes, and no secret leaks."""
    data_dir = tmp_path / "data"
    with server_process(data_dir) as server:
        backoffice = credentials(
            data_dir,
            "backoffice",
            "admin:users",
            "admin:roles",
            "admin:sessions",
        )
        reader_credentials = credentials(data_dir, "reporting", "admin:users:read")
        listing = ok(cli(data_dir, "clients", "list"))
        assert "admin:roles admin:sessions admin:users" in listing
        assert backoffice[1] not in listing

        with (
            AdminClient(server.base, *backoffice) as admin,
            AdminClient(server.base, *reader_credentials) as reader,
            httpx.Client(base_url=server.base) as browser,
        ):
            # Roles.
            assert admin.put_role("editor", ["posts:write"]).permissions == ("posts:write",)
            replaced = admin.put_role("editor", ["posts:read", "posts:write"])
            assert sorted(replaced.permissions) == ["posts:read", "posts:write"]
            admin.put_role("billing", ["invoices:read"])
            assert [role.name for role in admin.list_roles()] == ["billing", "editor"]

            # Users: one with a password and a role, more without (no invitation).
            ada = admin.create_user(
                "ada@example.com",
                password=PASSWORD,
                roles=["editor"],
                app_metadata={"plan": "free"},
            )
            assert (ada.roles, sorted(ada.scope)) == (("editor",), ["posts:read", "posts:write"])
            bulk = [
                admin.create_user(f"bulk{index}@example.com", send_invitation=False)
                for index in range(5)
            ]
            walked = list(reader.iter_users(page_size=2))
            assert {u.id for u in walked} == {ada.id, *(u.id for u in bulk)}
            assert len(walked) == 6
            assert [u.email for u in reader.iter_users(email_prefix="bulk", page_size=2)] == [
                u.email for u in sorted(bulk, key=lambda u: (u.created_at, u.id))
            ]
            first = reader.list_users(limit=4)
            assert len(first.users) == 4
            assert first.next_cursor is not None
            rest = reader.list_users(limit=4, cursor=first.next_cursor)
            assert len(rest.users) == 2
            assert rest.next_cursor is None
            assert reader.get_user(ada.id) == ada

            # The user logs in; the token carries the role; app_metadata shows in /auth/me.
            login = browser.post("/auth/login", json={"email": ada.email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            access = login.json()["access_token"]
            assert admin.set_app_metadata(ada.id, {"plan": "pro"}).app_metadata == {"plan": "pro"}
            me = browser.get("/auth/me", headers={"Authorization": f"Bearer {access}"}).json()
            assert me["app_metadata"] == {"plan": "pro"}
            admin.grant_role(ada.id, "billing")
            assert sorted(reader.get_user(ada.id).roles) == ["billing", "editor"]
            admin.revoke_role(ada.id, "billing")
            assert reader.get_user(ada.id).roles == ("editor",)

            # Sessions: three, one revoked, then the rest.
            refresh_tokens = [refresh_cookie(login)]
            for _ in range(2):
                again = browser.post("/auth/login", json={"email": ada.email, "password": PASSWORD})
                refresh_tokens.append(refresh_cookie(again))
            sessions = admin.list_sessions(ada.id)
            assert len(sessions) == 3
            assert {s.ip for s in sessions} == {"127.0.0.1"}
            assert admin.revoke_session(ada.id, sessions[0].id) is True
            assert admin.revoke_session(ada.id, sessions[0].id) is False
            assert admin.revoke_sessions(ada.id) == 2
            assert admin.reset_factors(ada.id) == 0  # no second factor to remove
            for token in refresh_tokens:
                answer = browser.post("/auth/refresh", headers={"Cookie": f"tw_refresh={token}"})
                assert answer.status_code == 401

            # Disable, enable, events.
            browser.post("/auth/login", json={"email": ada.email, "password": PASSWORD})
            assert admin.disable_user(ada.id) == 1
            assert reader.get_user(ada.id).disabled is True
            denied = browser.post("/auth/login", json={"email": ada.email, "password": PASSWORD})
            assert denied.status_code == 401
            admin.enable_user(ada.id)
            assert reader.get_user(ada.id).disabled is False
            events = reader.user_events(ada.id, limit=50)
            mine = [e for e in events if e.detail and e.detail.get("by") == "admin_api"]
            assert {e.type for e in mine} >= {
                "user.created",
                "user.app_metadata_changed",
                "role.granted",
                "role.revoked",
                "session.revoked",
                "user.disabled",
                "user.enabled",
            }
            assert {e.detail["client_id"] for e in mine if e.detail} == {backoffice[0]}

            # Refusals.
            errors = [
                refused(reader.disable_user, ada.id),
                refused(reader.put_role, "viewer", ["posts:read"]),
                refused(admin.create_user, "ADA@example.com", password=PASSWORD),
                refused(admin.create_user, "weak@example.com", password=WEAK),
                refused(admin.get_user, "no-such-user"),
                refused(admin.revoke_role, ada.id, "billing"),
            ]
            assert [(e.status, e.problem) for e in errors] == [
                (403, "insufficient-scope"),
                (403, "insufficient-scope"),
                (409, "email-taken"),
                (422, "weak-password"),
                (404, "not-found"),
                (404, "not-found"),
            ]
            assert [e.extra().get("scope") for e in errors[:2]] == ["admin:users", "admin:roles"]

            # Deletions.
            admin.delete_user(bulk[0].id)
            assert refused(reader.get_user, bulk[0].id).problem == "not-found"
            assert admin.delete_role("billing") is True
            assert admin.delete_role("billing") is False

            # A leaked client is revoked with the CLI: refused at once.
            assert "deleted client" in ok(cli(data_dir, "clients", "delete", backoffice[0]))
            gone = refused(admin.list_roles)
            assert (gone.status, gone.problem) == (401, "invalid-client")
            errors.append(gone)

            secrets = [backoffice[1], reader_credentials[1], PASSWORD, WEAK]
            for thing in (admin, reader, *errors):
                for text in (str(thing), repr(thing)):
                    assert not [s for s in secrets if s in text], text

    log = server.log.read_text()
    assert backoffice[1] not in log
    assert reader_credentials[1] not in log
    assert PASSWORD not in log


def test_clients_create_refuses_an_unknown_scope(tmp_path: Path) -> None:
    """``tokenward clients create --scope`` takes only the admin scopes; a typo makes no
    client (an operator would otherwise hand out credentials that can do nothing)."""
    data_dir = tmp_path / "data"
    result = cli(data_dir, "clients", "create", "typo", "--scope", "admin:user")
    assert result.returncode != 0
    assert "admin:user" in result.stderr
    assert "client_secret" not in result.stdout
    assert "typo" not in ok(cli(data_dir, "clients", "list"))
