"""Issue 13: what tokenward keeps on disk is its user's alone, and it says so when it is not.

The data folder 0700 and the SQLite database (with its -wal and -shm) 0600, whatever the umask
and even when they were there before with wider modes; a server secret file that other users
may read or write stops the start with one line saying how to fix it.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import PASSWORD, free_port, make_settings, server_process

from tokenward.exceptions import ConfigError
from tokenward.infra.masterkey import MasterKey
from tokenward.storage import Database

# The secret file exists only without TOKENWARD_SECRET_KEY, the database file only on SQLite.
pytestmark = pytest.mark.sqlite_only

TOKENWARD = str(Path(sys.executable).parent / "tokenward")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(
    data_dir: Path, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The console script as an operator with the usual umask (022) runs it."""
    return subprocess.run(
        [TOKENWARD, *args],
        env={**os.environ, "TOKENWARD_DATA_DIR": str(data_dir)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        umask=0o022,
    )


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """022 for this process and the servers it starts, whatever the test runner's was."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.mark.usefixtures("usual_umask")
def test_a_first_start_makes_everything_private_despite_the_umask(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with server_process(data_dir) as server:
        assert server.process.poll() is None
        database = data_dir / "tokenward.db"
        # The server holds the database open in WAL mode: its -wal and -shm are there now.
        companions = [data_dir / "tokenward.db-wal", data_dir / "tokenward.db-shm"]
        assert all(path.exists() for path in companions)
        assert {path.name: oct(mode(path)) for path in [database, *companions]} == {
            "tokenward.db": "0o600",
            "tokenward.db-wal": "0o600",
            "tokenward.db-shm": "0o600",
        }
    assert oct(mode(data_dir)) == "0o700"
    assert oct(mode(data_dir / "keys")) == "0o700"
    assert oct(mode(data_dir / "keys" / "secret.key")) == "0o600"


def test_an_existing_data_folder_and_database_are_tightened(tmp_path: Path) -> None:
    """Made earlier (an older tokenward, by hand, a restored backup) with 0755 and 0644: the
    next start makes them 0700 and 0600, and the server keeps its data."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    created = run(
        data_dir, "users", "create", "ada@example.com", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stderr
    database = data_dir / "tokenward.db"
    database.chmod(0o644)
    data_dir.chmod(0o755)

    listing = run(data_dir, "users", "list")
    assert listing.returncode == 0, listing.stderr
    assert "ada@example.com" in listing.stdout
    assert oct(mode(data_dir)) == "0o700"
    assert oct(mode(database)) == "0o600"


def test_leftover_wal_and_shm_files_are_tightened(tmp_path: Path) -> None:
    """SQLite gives new -wal and -shm files the database's mode; ones left from before (a
    crash while the database was 0644) are made 0600 as well, before SQLite opens them."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    database = data_dir / "tokenward.db"
    for name in ("tokenward.db", "tokenward.db-wal", "tokenward.db-shm", "tokenward.db-journal"):
        (data_dir / name).touch()
        (data_dir / name).chmod(0o644)
    Database._prepare_sqlite_file(f"sqlite+aiosqlite:///{database}")
    assert {path.name: oct(mode(path)) for path in data_dir.iterdir()} == {
        "tokenward.db": "0o600",
        "tokenward.db-wal": "0o600",
        "tokenward.db-shm": "0o600",
        "tokenward.db-journal": "0o600",
    }


def test_a_shared_sticky_folder_is_left_alone(tmp_path: Path) -> None:
    """A database put straight into a folder such as /tmp (sticky, shared): the file is made
    private, the folder others use is not changed."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    Database._prepare_sqlite_file(f"sqlite+aiosqlite:///{shared / 'tokenward.db'}")
    assert oct(mode(shared)) == "0o1777"
    assert oct(mode(shared / "tokenward.db")) == "0o600"


def secret_file(data_dir: Path, file_mode: int) -> Path:
    path = data_dir / "keys" / "secret.key"
    data_dir.mkdir(mode=0o700)
    path.parent.mkdir(mode=0o700)
    path.write_bytes(secrets.token_bytes(32))
    path.chmod(file_mode)
    return path


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666])
def test_a_secret_file_others_may_read_or_write_is_refused(tmp_path: Path, file_mode: int) -> None:
    path = secret_file(tmp_path / "data", file_mode)
    with pytest.raises(ConfigError) as refused:
        MasterKey.load(make_settings(tmp_path / "data"))
    assert str(refused.value) == (
        f"{path}: the server secret file is open to other users (mode {file_mode:04o}); "
        f"make it private to tokenward's user: chmod 600 {path}"
    )
    assert oct(mode(path)) == oct(file_mode)  # refused, not silently changed


@pytest.mark.parametrize("file_mode", [0o600, 0o400])
def test_a_private_secret_file_is_accepted(tmp_path: Path, file_mode: int) -> None:
    secret_file(tmp_path / "data", file_mode)
    assert MasterKey.load(make_settings(tmp_path / "data")).refresh_mac_key()


def test_serve_refuses_to_start_with_a_0644_secret_file(tmp_path: Path) -> None:
    """A real `tokenward serve`: one line naming the file and the fix, exit 1, no traceback."""
    data_dir = tmp_path / "data"
    path = secret_file(data_dir, 0o644)
    try:
        result = run(data_dir, "serve", "--port", str(free_port()), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("tokenward serve started with a secret file other users can read")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"tokenward: {path}: the server secret file is open to other users (mode 0644); "
        f"make it private to tokenward's user: chmod 600 {path}"
    ]
    path.chmod(0o600)
    with server_process(data_dir) as server:  # fixed as the message says: it starts
        assert server.process.poll() is None
