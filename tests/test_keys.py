"""Key rotation: published before it signs, kept until its tokens expire, retired at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from support import Api, FakeClock, refresh_cookie

from tokenward.app.operators import Admin
from tokenward.exceptions import KeyRotationError

TOKENWARD = str(Path(sys.executable).parent / "tokenward")


async def published_kids(api: Api) -> list[str]:
    response = await api.http.get("/.well-known/jwks.json")
    return [key["kid"] for key in response.json()["keys"]]


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_rotation_publishes_first_signs_later_and_keeps_the_old_key(
    api: Api, service: Any, clock: FakeClock
) -> None:
    """No token fails at any point of a rotation, and the old key leaves once unneeded."""
    admin = Admin(service)
    old_access, refresh = await api.signed_up()
    old_kid = kid_of(old_access)
    new = await admin.rotate_key()
    await service.signing_keys.reload_keys()

    # Published at once, not signing yet: verifiers caching the JWKS learn it first.
    assert await published_kids(api) == [old_kid, new.kid]
    response = await api.refresh(refresh)
    assert kid_of(response.json()["access_token"]) == old_kid

    clock.advance(
        (service.settings.jwks_max_age + service.settings.key_reload_interval).total_seconds() + 1
    )
    response = await api.refresh(refresh_cookie(response))
    new_access = response.json()["access_token"]
    assert kid_of(new_access) == new.kid
    # The old key still verifies the tokens it signed, until they expire.
    assert (await api.me(old_access)).status_code == 200
    assert (await api.me(new_access)).status_code == 200
    assert set(await published_kids(api)) == {old_kid, new.kid}
    states = {key.kid: key.state for key in await admin.keys()}
    assert states == {old_kid: "verifying", new.kid: "signing"}

    # Once every token the old key signed has expired (TTL + leeway), it leaves the JWKS.
    clock.advance(service.settings.access_ttl.total_seconds() + 31)
    assert await published_kids(api) == [new.kid]
    assert {key.kid: key.state for key in await admin.keys()}[old_kid] == "expired"


async def test_retire_withdraws_a_key_at_once(api: Api, service: Any, clock: FakeClock) -> None:
    """A compromised key: gone from the JWKS, its tokens refused, the new key signs."""
    admin = Admin(service)
    old_access, refresh = await api.signed_up()
    old_kid = kid_of(old_access)
    new = await admin.rotate_key(immediately=True)
    await admin.retire_key(old_kid)
    await service.signing_keys.reload_keys()
    assert await published_kids(api) == [new.kid]
    assert (await api.me(old_access)).status_code == 401
    response = await api.refresh(refresh)
    assert kid_of(response.json()["access_token"]) == new.kid
    assert (await api.me(response.json()["access_token"])).status_code == 200


async def test_the_only_signing_key_cannot_be_retired(service: Any) -> None:
    admin = Admin(service)
    [key] = await admin.keys()
    with pytest.raises(KeyRotationError, match="only signing key"):
        await admin.retire_key(key.kid)
    with pytest.raises(KeyRotationError, match="no key"):
        await admin.retire_key("nope")


@pytest.mark.parametrize("settings_overrides", [{"key_rotation": "1d"}])
async def test_automatic_rotation(api: Api, service: Any, clock: FakeClock) -> None:
    """TOKENWARD_KEY_ROTATION: the key reload makes a new key once the newest is too old."""
    access, _ = await api.signed_up()
    clock.advance(86400 + 1)
    await service.signing_keys.reload_keys()
    kids = await published_kids(api)
    assert len(kids) == 2
    assert kids[0] == kid_of(access)
    await service.signing_keys.reload_keys()
    assert len(await published_kids(api)) == 2  # once, not on every reload


def test_keys_cli(tmp_path: Path) -> None:
    """keys list / rotate / retire through the console script."""
    env = {**os.environ, "TOKENWARD_DATA_DIR": str(tmp_path / "data")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TOKENWARD, "keys", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    first = run("list")
    assert first.returncode == 0, first.stderr
    [line] = first.stdout.splitlines()
    old_kid, alg, state = line.split("\t")[:3]
    assert (alg, state) == ("ES256", "signing")
    rotated = run("rotate")
    assert rotated.returncode == 0
    assert rotated.stdout.startswith("new key ")
    states = [row.split("\t")[2] for row in run("list").stdout.splitlines()]
    assert states == ["signing", "upcoming"]
    refused = run("retire", old_kid)
    assert refused.returncode == 1
    assert "only signing key" in refused.stderr
    assert run("rotate", "--now").returncode == 0
    assert run("retire", old_kid).stdout.strip() == f"retired key {old_kid}"
    assert "retired" in run("list").stdout.splitlines()[0]
    # A kid is base64url: one that begins with "-" is still the argument, not an option.
    for unknown in ("-qPQ492hTVgzamPw54iwzMQ", "--no-such-kid"):
        missing = run("retire", unknown)
        assert missing.returncode == 1, missing.stderr
        assert "No such option" not in missing.stderr


async def test_an_instance_with_another_secret_refuses_to_start(tmp_path: Path) -> None:
    """Instances must share TOKENWARD_SECRET_KEY; a mismatch is one clear line, not a crash."""
    from support import make_settings

    from tokenward.app.service import AuthService
    from tokenward.exceptions import ConfigError

    data_dir = tmp_path / "data"
    first = await AuthService.open(make_settings(data_dir, secret_key="s" * 40))
    await first.close()
    with pytest.raises(ConfigError, match="encrypted under a different secret"):
        await AuthService.open(make_settings(data_dir, secret_key="t" * 40))


async def test_instances_starting_together_make_one_first_key(tmp_path: Path) -> None:
    import asyncio
    from datetime import UTC, datetime

    from sqlalchemy import func, select
    from support import make_settings

    from tokenward.infra.masterkey import MasterKey
    from tokenward.storage import Database, SigningKeyRow
    from tokenward.storage.keys import KeyStore

    settings = make_settings(tmp_path / "data", secret_key="s" * 40)
    database = Database(settings.sqlalchemy_url)
    try:
        await database.migrate()
        stores = [KeyStore(database, MasterKey.load(settings), settings) for _ in range(8)]
        now = datetime.now(UTC)
        keyrings = await asyncio.gather(*(store.ensure_signer(now) for store in stores))
        assert len({keyring.signer(now).kid for keyring in keyrings}) == 1
        async with database.read() as db:
            count = (await db.execute(select(func.count()).select_from(SigningKeyRow))).scalar()
        assert count == 1
    finally:
        await database.dispose()


async def test_a_scheduled_rotation_due_on_many_instances_happens_once(tmp_path: Path) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from support import make_settings

    from tokenward.infra.masterkey import MasterKey
    from tokenward.storage import Database
    from tokenward.storage.keys import KeyStore

    settings = make_settings(tmp_path / "data", secret_key="s" * 40, key_rotation="1d")
    database = Database(settings.sqlalchemy_url)
    try:
        await database.migrate()
        stores = [KeyStore(database, MasterKey.load(settings), settings) for _ in range(8)]
        start = datetime.now(UTC)
        await stores[0].ensure_signer(start)
        later = start + timedelta(days=1, seconds=1)
        rotated = await asyncio.gather(*(store.rotate_if_due(later) for store in stores))
        assert len([key for key in rotated if key is not None]) == 1
        assert len((await stores[0].keyring()).published(later)) == 2
    finally:
        await database.dispose()


@pytest.mark.sqlite_only  # the secret file exists only without TOKENWARD_SECRET_KEY
def test_a_damaged_secret_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    keys = tmp_path / "data" / "keys"
    keys.mkdir(parents=True)
    (keys / "secret.key").write_bytes(b"")  # as a crash mid-write would once have left it
    (keys / "secret.key").chmod(0o600)  # private, as tokenward made it: only damaged
    result = subprocess.run(
        [TOKENWARD, "users", "list"],
        env={**os.environ, "TOKENWARD_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "the server secret file is damaged (0 bytes)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite_only  # the secret file exists only without TOKENWARD_SECRET_KEY
def test_processes_making_the_secret_together_agree_on_it(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tokenward.infra.masterkey import _write_private

    path = tmp_path / "keys" / "secret.key"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: _write_private(path, bytes([n]) * 32), range(8)))
    assert len(set(results)) == 1 and results[0] == path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left
