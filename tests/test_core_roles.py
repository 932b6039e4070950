"""core.roles and core.scopes as tables: what a role name and a permission may be, how a
user's grants read from storage become a token's `roles` and `scope`, and which admin API
scopes let a client do what. No I/O."""

from __future__ import annotations

import pytest

from tokenward.core.roles import (
    MAX_PERMISSIONS,
    NO_GRANTS,
    Grants,
    check_permission,
    check_role_name,
    permissions_of,
)
from tokenward.core.scopes import AdminScope, allows
from tokenward.exceptions import InvalidRoleError

pytestmark = pytest.mark.sqlite_only  # no database: once, on the SQLite run

# -- role names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["admin", "a", "notes-reader", "team.lead", "org:admin", "x_1", "a9", "a" * 64],
)
def test_role_names_that_are_accepted(name: str) -> None:
    """A lower-case letter, then a-z 0-9 _ . : -, at most 64 characters: returned as given."""
    assert check_role_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        "Admin",  # lower case only: names are compared exactly
        "ADMIN",
        "1admin",
        "-admin",
        "_admin",
        ".admin",
        "admin role",  # names travel space-separated in tokens and storage
        "admin\n",
        "\tadmin",
        "admin/x",
        "admin,x",  # TOKENWARD_DEFAULT_ROLES is a comma list
        "ädmin",
        "admin\u00a0",
        "ＡＤＭＩＮ",  # noqa: RUF001 - full-width letters: no look-alikes
    ],
)
def test_role_names_that_are_refused(name: str) -> None:
    """Anything else is InvalidRoleError (422 on the admin API), never a role."""
    with pytest.raises(InvalidRoleError):
        check_role_name(name)


@pytest.mark.parametrize("value", [None, 5, b"admin", ["admin"]])
def test_a_role_name_that_is_not_a_string_is_invalid_not_a_crash(value: object) -> None:
    with pytest.raises(InvalidRoleError):
        check_role_name(value)  # type: ignore[arg-type]


# -- permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "permission",
    [
        "notes:read",
        "a",
        "!",  # %x21, the first scope-token character
        "~",  # %x7E, the last
        "[]#",  # %x5B, %x5D and %x23, around the two left out
        "https://api.example.com/notes.read",
        "Notes:Read",  # case is kept: scope tokens are case-sensitive (RFC 6749 3.3)
        "x" * 128,
    ],
)
def test_permissions_that_are_accepted(permission: str) -> None:
    """An RFC 6749 scope-token of at most 128 characters: returned as given."""
    assert check_permission(permission) == permission


@pytest.mark.parametrize(
    "permission",
    [
        "",
        "x" * 129,
        "notes read",  # the scope claim is space-separated: a space would split it
        '"notes"',  # %x22 is not a scope-token character
        "notes\\read",  # nor %x5C
        "notes:read\n",
        "\tnotes",
        "notes\x00",
        "notes\x7f",
        "café:read",
        "notes:read\u2028",
    ],
)
def test_permissions_that_are_refused(permission: str) -> None:
    """Anything that would not survive the space-separated `scope` claim is refused."""
    with pytest.raises(InvalidRoleError):
        check_permission(permission)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ([], ()),
        (["notes:write", "notes:read"], ("notes:read", "notes:write")),
        (["b", "a", "b", "a"], ("a", "b")),
        (iter(["z", "y"]), ("y", "z")),  # any iterable, read once
    ],
)
def test_a_roles_permissions_are_kept_deduplicated_and_sorted(
    given: list[str], kept: tuple[str, ...]
) -> None:
    """One form whatever order or repetition they were given in."""
    assert permissions_of(given) == kept


def test_a_role_grants_at_most_max_permissions_distinct_ones() -> None:
    """MAX_PERMISSIONS distinct permissions are fine, even given twice; one more is refused."""
    allowed = [f"p{i}" for i in range(MAX_PERMISSIONS)]
    assert len(permissions_of(allowed + allowed)) == MAX_PERMISSIONS
    with pytest.raises(InvalidRoleError, match="at most"):
        permissions_of([*allowed, "one-more"])


def test_one_bad_permission_refuses_them_all() -> None:
    with pytest.raises(InvalidRoleError):
        permissions_of(["notes:read", "notes write"])


# -- grants: what storage holds, what the token carries --------------------------------------


@pytest.mark.parametrize(
    ("roles", "permissions", "expected_roles", "expected_permissions", "scope"),
    [
        (None, None, (), (), ""),  # no grant rows
        ("", None, (), (), ""),
        (None, "notes:read", (), (), ""),  # permissions only ever come through a role
        ("editor", None, ("editor",), (), ""),  # a role granting nothing
        ("editor", "", ("editor",), (), ""),
        ("editor", "notes:read", ("editor",), ("notes:read",), "notes:read"),
        (
            "viewer editor",
            "notes:read notes:write notes:read",  # two roles granting notes:read
            ("editor", "viewer"),
            ("notes:read", "notes:write"),
            "notes:read notes:write",
        ),
        ("editor editor", "b a", ("editor",), ("a", "b"), "a b"),
        # A role without permissions aggregates to an empty string between the others.
        ("a  b ", "x  y ", ("a", "b"), ("x", "y"), "x y"),
    ],
)
def test_grants_parse_storage_aggregates_into_sorted_roles_and_scope(
    roles: str | None,
    permissions: str | None,
    expected_roles: tuple[str, ...],
    expected_permissions: tuple[str, ...],
    scope: str,
) -> None:
    """Roles and permissions sorted and de-duplicated; `scope` is the permissions joined by
    single spaces, "" for none (the token then leaves the claim out)."""
    grants = Grants.parse(roles, permissions)
    assert (grants.roles, grants.permissions) == (expected_roles, expected_permissions)
    assert grants.scope == scope


def test_no_grants_is_the_empty_grants() -> None:
    assert NO_GRANTS == Grants() == Grants.parse(None, None)
    assert (NO_GRANTS.roles, NO_GRANTS.permissions, NO_GRANTS.scope) == ((), (), "")


# -- admin API scopes -------------------------------------------------------------------------


def test_the_admin_scopes_are_the_documented_strings() -> None:
    """What `tokenward clients create --scope` takes and docs name."""
    assert {scope.value for scope in AdminScope} == {
        "admin:users:read",
        "admin:users",
        "admin:roles",
        "admin:sessions",
    }


@pytest.mark.parametrize("needed", list(AdminScope))
@pytest.mark.parametrize("held", list(AdminScope))
def test_each_admin_scope_allows_itself_and_admin_users_allows_reading(
    held: AdminScope, needed: AdminScope
) -> None:
    """A scope covers only itself, except admin:users, which covers admin:users:read; never
    the reverse."""
    implied = (held, needed) == (AdminScope.USERS, AdminScope.USERS_READ)
    assert allows([held.value], needed) is (held == needed or implied)


@pytest.mark.parametrize(
    ("held", "needed", "allowed"),
    [
        ([], AdminScope.ROLES, False),  # a resource server's client
        (["admin:roles", "admin:sessions"], AdminScope.SESSIONS, True),
        (iter(["admin:roles"]), AdminScope.ROLES, True),
        # Unknown strings are ignored, never an error nor a wildcard.
        (["admin:*"], AdminScope.ROLES, False),
        (["admin"], AdminScope.USERS_READ, False),
        (["ADMIN:ROLES"], AdminScope.ROLES, False),
        (["admin:roles:read"], AdminScope.ROLES, False),
        (["notes:read", "admin:roles"], AdminScope.ROLES, True),
        (["admin:users:read"], AdminScope.USERS, False),
    ],
)
def test_allows(held: list[str], needed: AdminScope, allowed: bool) -> None:
    assert allows(held, needed) is allowed
