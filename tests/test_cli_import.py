"""`tokenward users import FILE` through the real console script, then logins in-process.

The import runs as a separate process (the installed ``tokenward`` script) on a data dir; the
app is then started on that same data dir with the production password hasher, so that the
imported bcrypt and argon2 hashes are verified (and upgraded) exactly as in production.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pwdlib import PasswordHash
from sqlalchemy import func, select
from support import LIFESPAN_TIMEOUT, Api, make_settings

from tokenward.storage import UserRow
from tokenward.web import create_app


def _console_script() -> str:
    beside_python = Path(sys.executable).parent / "tokenward"
    found = str(beside_python) if beside_python.exists() else shutil.which("tokenward")
    assert found, "the tokenward console script is not installed"
    return found


TOKENWARD = _console_script()

BCRYPT_2B = ("bcrypt2b@example.com", "legacy password from the tutorial")
BCRYPT_2A = ("bcryptjs@example.com", "made by bcryptjs in node")
ARGON2 = ("argon@example.com", "already argon2 hashed")
GOOD_USERS = (BCRYPT_2B, BCRYPT_2A, ARGON2)
WRONG_PASSWORD = "not the password at all"


@dataclass(frozen=True)
class LegacyHashes:
    bcrypt_2b: str
    bcrypt_2a: str
    argon2: str
    md5: str

    def all(self) -> tuple[str, ...]:
        return (self.bcrypt_2b, self.bcrypt_2a, self.argon2, self.md5)


@pytest.fixture(scope="module")
def legacy() -> LegacyHashes:
    """Hashes as other systems made them: Python bcrypt, bcryptjs ($2a$), pwdlib argon2."""
    hash_2b = bcrypt.hashpw(BCRYPT_2B[1].encode(), bcrypt.gensalt(10)).decode()
    hash_2a = bcrypt.hashpw(BCRYPT_2A[1].encode(), bcrypt.gensalt(10, prefix=b"2a")).decode()
    assert hash_2b.startswith("$2b$10$")
    assert hash_2a.startswith("$2a$10$")
    argon2 = PasswordHash.recommended().hash(ARGON2[1])
    assert argon2.startswith("$argon2id$")
    md5 = "md5$" + hashlib.md5(b"old password").hexdigest()  # noqa: S324 - an unsupported hash
    return LegacyHashes(hash_2b, hash_2a, argon2, md5)


def _jsonl(*records: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def users_file(legacy: LegacyHashes) -> str:
    """Three good records (1-3), then five bad ones (4-8)."""
    return _jsonl(
        {"email": BCRYPT_2B[0], "password_hash": legacy.bcrypt_2b},
        {"email": BCRYPT_2A[0], "password_hash": legacy.bcrypt_2a},
        {"email": ARGON2[0], "password_hash": legacy.argon2},
        '{"email": "broken@example.com", "password_hash": ',  # 4: not JSON
        {"email": "nohash@example.com"},  # 5: missing field
        {"email": "md5@example.com", "password_hash": legacy.md5},  # 6: unsupported hash
        ["not", "an", "object"],  # 7: JSON, but not an object
        {"email": "not an email", "password_hash": legacy.bcrypt_2b},  # 8: invalid email
    )


FIRST_RUN = "imported 3, skipped 0 existing, rejected records: 4, 5, 6, 7, 8"


def run_import(data_dir: Path, file: Path) -> subprocess.CompletedProcess[str]:
    """The real console script, as an operator runs it."""
    return subprocess.run(
        [TOKENWARD, "users", "import", str(file)],
        env={**os.environ, "TOKENWARD_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_output(result: subprocess.CompletedProcess[str], code: int, line: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout.splitlines() == [line], result.stdout


def assert_no_hash_in_output(
    result: subprocess.CompletedProcess[str], legacy: LegacyHashes
) -> None:
    output = result.stdout + result.stderr
    for password_hash in legacy.all():
        assert password_hash not in output
        assert password_hash[-31:] not in output  # not even the digest part on its own
    for _, password in GOOD_USERS:
        assert password not in output


@dataclass
class Imported:
    data_dir: Path
    file: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture
def imported(tmp_path: Path, legacy: LegacyHashes) -> Imported:
    """The users file imported once into a fresh data dir."""
    data_dir = tmp_path / "data"
    file = tmp_path / "users.jsonl"
    file.write_text(users_file(legacy), encoding="utf-8")
    return Imported(data_dir, file, run_import(data_dir, file))


@asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[tuple[Api, Any]]:
    """The app on ``data_dir``, in-process, with the production hasher: (api, service)."""
    app = create_app(make_settings(data_dir))
    async with LifespanManager(
        app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT
    ):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        jar = httpx.Cookies()
        jar.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", cookies=jar
        ) as client:
            yield Api(client), app.state.service


async def stored_hash(service: Any, email: str) -> str:
    async with service.db.read() as db:
        result = await db.execute(select(UserRow.password_hash).where(UserRow.email == email))
        return result.scalar_one()


async def user_count(service: Any) -> int:
    async with service.db.read() as db:
        return (await db.execute(select(func.count()).select_from(UserRow))).scalar_one()


async def assert_login(api: Api, email: str, password: str, status: int) -> None:
    response = await api.login(email, password)
    assert response.status_code == status, response.text
    if status == 200:
        me = await api.me(response.json()["access_token"])
        assert me.status_code == 200
        assert me.json()["email"] == email


# -- the import run ------------------------------------------------------------------------------


def test_import_reports_the_counts_and_exits_1_for_rejected_records(
    imported: Imported, legacy: LegacyHashes
) -> None:
    """Three users imported, records 4-8 rejected: exit 1 and one line naming the counts."""
    assert_output(imported.result, 1, FIRST_RUN)


def test_import_output_never_contains_a_hash(imported: Imported, legacy: LegacyHashes) -> None:
    """Neither stdout nor stderr echoes a password hash (good or rejected record)."""
    assert_no_hash_in_output(imported.result, legacy)


def test_a_file_of_only_good_records_exits_0(tmp_path: Path, legacy: LegacyHashes) -> None:
    """No rejected record: exit 0 and "rejected records: none"."""
    file = tmp_path / "good.jsonl"
    file.write_text(
        _jsonl({"email": BCRYPT_2B[0], "password_hash": legacy.bcrypt_2b}, ""), encoding="utf-8"
    )
    result = run_import(tmp_path / "data", file)
    assert_output(result, 0, "imported 1, skipped 0 existing, rejected records: none")
    assert_no_hash_in_output(result, legacy)


async def test_only_the_good_records_became_users(imported: Imported) -> None:
    """The database holds exactly the three valid users; the rejected emails cannot log in."""
    assert imported.result.returncode == 1
    async with running(imported.data_dir) as (api, service):
        assert await user_count(service) == 3
        for email in ("broken@example.com", "nohash@example.com", "md5@example.com"):
            await assert_login(api, email, "old password", 401)


# -- logging in as an imported user --------------------------------------------------------------


@pytest.mark.parametrize("user", [BCRYPT_2B, BCRYPT_2A], ids=["bcrypt-2b", "bcryptjs-2a"])
async def test_a_bcrypt_user_logs_in_and_the_hash_is_upgraded_to_argon2id(
    imported: Imported, legacy: LegacyHashes, user: tuple[str, str]
) -> None:
    """The original password logs in (200), a wrong one gets 401, and login rehashes to argon2id."""
    email, password = user
    original = legacy.bcrypt_2b if user is BCRYPT_2B else legacy.bcrypt_2a
    async with running(imported.data_dir) as (api, service):
        assert await stored_hash(service, email) == original

        await assert_login(api, email, WRONG_PASSWORD, 401)
        assert await stored_hash(service, email) == original, "a failed login changed the hash"

        await assert_login(api, email, password, 200)
        upgraded = await stored_hash(service, email)
        assert upgraded.startswith("$argon2id$")

        # The upgraded hash is for the same password, and only for it.
        await assert_login(api, email, password, 200)
        await assert_login(api, email, WRONG_PASSWORD, 401)
        assert await stored_hash(service, email) == upgraded


async def test_an_argon2_user_logs_in_with_the_hash_kept(
    imported: Imported, legacy: LegacyHashes
) -> None:
    """A pwdlib argon2id hash (same parameters as the server's) verifies and is kept as it is."""
    email, password = ARGON2
    async with running(imported.data_dir) as (api, service):
        await assert_login(api, email, WRONG_PASSWORD, 401)
        await assert_login(api, email, password, 200)
        assert await stored_hash(service, email) == legacy.argon2


# -- running the import again --------------------------------------------------------------------


async def test_reimport_skips_existing_users_and_keeps_their_upgraded_hash(
    imported: Imported, legacy: LegacyHashes, tmp_path: Path
) -> None:
    """A second run imports nobody again and never puts the old bcrypt hash back."""
    assert_output(imported.result, 1, FIRST_RUN)
    email, password = BCRYPT_2B
    async with running(imported.data_dir) as (api, service):
        await assert_login(api, email, password, 200)
        upgraded = await stored_hash(service, email)
    assert upgraded.startswith("$argon2id$")

    again = await asyncio.to_thread(run_import, imported.data_dir, imported.file)
    assert_output(again, 1, "imported 0, skipped 3 existing, rejected records: 4, 5, 6, 7, 8")
    assert_no_hash_in_output(again, legacy)

    more = tmp_path / "more.jsonl"
    more.write_text(
        _jsonl(
            {"email": email.upper(), "password_hash": legacy.bcrypt_2b},  # same user, other case
            {"email": "newcomer@example.com", "password_hash": legacy.bcrypt_2a},
        ),
        encoding="utf-8",
    )
    third = await asyncio.to_thread(run_import, imported.data_dir, more)
    assert_output(third, 0, "imported 1, skipped 1 existing, rejected records: none")

    async with running(imported.data_dir) as (api, service):
        assert await user_count(service) == 4
        assert await stored_hash(service, email) == upgraded
        await assert_login(api, email, password, 200)
        await assert_login(api, "newcomer@example.com", BCRYPT_2A[1], 200)


# -- bcrypt's 72-byte limit ----------------------------------------------------------------------

PASSWORDS_OF_72_BYTES = {
    "ascii": ("correct horse battery staple " * 3)[:72],
    "two-byte-utf8": "\u00e9" * 36,  # é, NFKC-stable: 36 characters, 72 bytes
}


@pytest.mark.parametrize(
    "password", PASSWORDS_OF_72_BYTES.values(), ids=PASSWORDS_OF_72_BYTES.keys()
)
async def test_bcrypt_never_accepts_a_password_differing_only_after_byte_72(
    tmp_path: Path, password: str
) -> None:
    """Against a bcrypt hash of a 72-byte password P, P + "extra" is refused; P itself logs in.

    bcrypt only ever looks at the first 72 bytes (older bcrypt releases silently truncate, 5.x
    raises), so the server must refuse longer passwords against a bcrypt hash outright.
    """
    assert len(password.encode()) == 72
    email = "seventy-two@example.com"
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    file = tmp_path / "users.jsonl"
    file.write_text(_jsonl({"email": email, "password_hash": password_hash}), encoding="utf-8")
    data_dir = tmp_path / "data"
    result = await asyncio.to_thread(run_import, data_dir, file)
    assert_output(result, 0, "imported 1, skipped 0 existing, rejected records: none")
    assert password_hash not in result.stdout + result.stderr

    async with running(data_dir) as (api, service):
        for longer in (password + "extra", password + "\u00e9", password + " "):
            await assert_login(api, email, longer, 401)
        assert await stored_hash(service, email) == password_hash, "no upgrade on a refusal"

        await assert_login(api, email, password, 200)
        assert (await stored_hash(service, email)).startswith("$argon2id$")
        # After the upgrade to argon2id the extra bytes count, as they always should have.
        await assert_login(api, email, password + "extra", 401)
